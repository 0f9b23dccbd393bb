# focus-nemo on the NGC BioNeMo framework image, which ships NeMo 2 (with the Evo-2 / Hyena
# model), Megatron-core, Transformer Engine and a CUDA build of PyTorch.
#   docker build -t focus-nemo .
#   docker run --gpus all --ipc=host --ulimit memlock=-1 --ulimit stack=67108864 -it focus-nemo
ARG BASE_IMAGE=nvcr.io/nvidia/clara/bionemo-framework:2.6.1
FROM ${BASE_IMAGE}

WORKDIR /workspace/focus-nemo
COPY pyproject.toml README.md ./
COPY focus_nemo ./focus_nemo
COPY recipes ./recipes
COPY conf ./conf

# The image's torch, NeMo and Megatron stay as they are: install only this package and its light
# pure-Python dependencies (the CPU pin of torch in pyproject.toml must not replace the CUDA build).
RUN pip install --no-cache-dir --no-deps -e . \
 && pip install --no-cache-dir "safetensors>=0.4" "einops>=0.7" "pyfaidx>=0.8" "biopython>=1.79" \
      "rich>=13" "tqdm>=4.66" "matplotlib>=3.8"

ENTRYPOINT ["python"]
CMD ["recipes/train_focus.py", "--help"]
