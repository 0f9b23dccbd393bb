"""The NeMo trainer's data: global sample s -> the training window s of the seeded sampler
(`focus_nemo.training.data.train_sampler`) and the ratio k of its step, served by Megatron's data sampler."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch


class FocusWindowDataset(torch.utils.data.Dataset):
    """Global sample s -> {"raw": window s of the seeded sampler, "k": the ratio of s's step}.

    Megatron's data sampler hands each data-parallel rank its share of every global batch; sample
    indices start at `start_step * global_batch_size`, so a resumed run reads exactly the samples an
    uninterrupted run would.
    """

    def __init__(self, sampler, ratio_for_step, global_batch_size: int, start_step: int, max_steps: int) -> None:
        self.sampler, self.ratio_for_step, self.gbs = sampler, ratio_for_step, global_batch_size
        self.start, self.steps = start_step, max_steps - start_step

    def __len__(self) -> int:
        return self.steps * self.gbs

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.start * self.gbs + i
        window = self.sampler.sample(s)
        return {"raw": torch.from_numpy(window.seq.astype(np.int64)),
                "k": torch.tensor(self.ratio_for_step(s // self.gbs))}


class FocusDataModule(pl.LightningDataModule):
    def __init__(self, dataset: FocusWindowDataset, micro_batch_size: int, global_batch_size: int,
                 seq_length: int) -> None:
        from nemo.lightning.pytorch.plugins import MegatronDataSampler

        super().__init__()
        self.dataset = dataset
        self.micro_batch_size = micro_batch_size
        self.data_sampler = MegatronDataSampler(seq_len=seq_length, micro_batch_size=micro_batch_size,
                                                global_batch_size=global_batch_size, dataloader_type="single",
                                                # its progress-bar logging pins memory (CUDA only)
                                                output_log=torch.cuda.is_available())

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.dataset, batch_size=self.micro_batch_size, num_workers=0)
