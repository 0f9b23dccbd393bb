"""Cluster plumbing: GPU trainer configs, Hydra submitit launcher configs, Slurm batch scripts and the
container's dependency installer. Slurm, pyxis and the container are stood in for by small fake
commands, so every script here really runs."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from packaging.requirements import Requirement

from focus_nemo.evaluate import config_from_hydra as eval_config_from_hydra
from focus_nemo.evo2 import Evo2Config
from focus_nemo.train import config_from_hydra

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SLURM = REPO / "recipes" / "slurm"
LAUNCHERS = ["slurm_1node_8gpu", "slurm_multinode"]
TRAINER_KEYS = {"backend", "accelerator", "devices", "num_nodes", "tensor_model_parallel_size",
                "pipeline_model_parallel_size", "precision", "lr", "weight_decay", "warmup_steps", "max_steps",
                "batch_size", "grad_clip"}


def compose_train(*overrides: str, hydra_config: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train_focus", overrides=list(overrides), return_hydra_config=hydra_config)


def trainer_yaml(name: str) -> dict:
    return yaml.safe_load((CONF / "trainer" / f"{name}.yaml").read_text())


# --------------------------------------------------------------------------- trainer configs
@pytest.mark.parametrize("name", ["gpu", "dgx_8gpu"])
def test_gpu_trainer_configs_are_consistent(name):
    t = trainer_yaml(name)
    assert set(t) == TRAINER_KEYS
    mp = t["tensor_model_parallel_size"] * t["pipeline_model_parallel_size"]
    assert (t["devices"] * t["num_nodes"]) % mp == 0
    assert t["accelerator"] == "gpu" and t["precision"] == "bf16-mixed"
    cfg = config_from_hydra(compose_train(f"trainer={name}", "run_dir=/tmp/x"))
    assert cfg.trainer.backend == t["backend"] and cfg.trainer.tensor_model_parallel_size == t[
        "tensor_model_parallel_size"]


def test_single_gpu_trainer_runs_one_process():
    t = trainer_yaml("gpu")
    assert t["backend"] == "single" and t["devices"] * t["num_nodes"] == 1


@pytest.mark.parametrize("nodes", [1, 2, 4])
def test_dgx_trainer_is_tensor_parallel_inside_a_node(nodes):
    t = trainer_yaml("dgx_8gpu")
    assert t["backend"] == "nemo" and t["devices"] == 8 and t["pipeline_model_parallel_size"] == 1
    tp = t["tensor_model_parallel_size"]
    assert tp == t["devices"]  # every tensor-parallel group is one node
    cfg = config_from_hydra(compose_train("trainer=dgx_8gpu", f"trainer.num_nodes={nodes}", "run_dir=/tmp/x")).trainer
    world = cfg.devices * cfg.num_nodes
    assert world % (cfg.tensor_model_parallel_size * cfg.pipeline_model_parallel_size) == 0
    assert world // (cfg.tensor_model_parallel_size * cfg.pipeline_model_parallel_size) == nodes  # DP = nodes
    # Every tensor-parallel split of the Evo-2 7B and 40B shapes is whole.
    for preset in ("7b", "40b"):
        e = Evo2Config.preset(preset)
        for size in (e.num_heads, e.hidden_size, e.ffn_hidden_size, e.hcs_groups, e.hcm_groups, e.hcl_groups):
            assert size % tp == 0, (preset, size)


def test_trainer_parallel_sizes_must_divide_the_world():
    with pytest.raises(ValueError, match="tensor_model_parallel_size"):
        config_from_hydra(compose_train("trainer=dgx_8gpu", "trainer.tensor_model_parallel_size=3", "run_dir=/x"))


# --------------------------------------------------------------------------- Hydra submitit launcher
@pytest.fixture
def submitit_env(monkeypatch, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="hydra-submitit-launcher is not installed (the dev extra installs it)")
    monkeypatch.setenv("FOCUS_IMAGE", "/images/focus-nemo.sqsh")
    monkeypatch.setenv("PWD", str(tmp_path / "checkout"))
    monkeypatch.delenv("FOCUS_MOUNTS", raising=False)
    monkeypatch.delenv("SBATCH_PARTITION", raising=False)
    monkeypatch.setenv("SBATCH_ACCOUNT", "genomics")
    return tmp_path


def launcher_config(launcher: str, tmp_path: Path, *overrides: str):
    return compose_train(f"hydra/launcher={launcher}", "trainer=dgx_8gpu", f"run_dir={tmp_path}/run",
                         f"hydra.sweep.dir={tmp_path}/sweep", *overrides, hydra_config=True)


@pytest.mark.parametrize("launcher,overrides,nodes", [("slurm_1node_8gpu", (), 1),
                                                      ("slurm_multinode", ("trainer.num_nodes=4",), 4)])
def test_launcher_composes_and_instantiates(submitit_env, launcher, overrides, nodes):
    from hydra.plugins.launcher import Launcher
    from hydra.utils import get_class, instantiate
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    tmp = submitit_env
    cfg = launcher_config(launcher, tmp, *overrides)
    job = compose_train(f"hydra/launcher={launcher}", "trainer=dgx_8gpu", f"run_dir={tmp}/run", *overrides)
    assert config_from_hydra(job).trainer.num_nodes == nodes  # the job's own config is still valid
    cls = get_class(cfg.hydra.launcher._target_)
    assert issubclass(cls, SlurmLauncher) and issubclass(cls, Launcher)
    launcher_obj = instantiate(cfg.hydra.launcher)  # builds the launcher; submits nothing
    p = launcher_obj.params
    # One Slurm task per GPU, exactly the processes the trainer config expects.
    assert p["nodes"] == nodes and p["tasks_per_node"] == p["gpus_per_node"] == cfg.trainer.devices
    assert p["nodes"] * p["tasks_per_node"] == cfg.trainer.devices * cfg.trainer.num_nodes
    # The submitit folder (pickled job, logs) lives in the fixed run directory.
    assert p["submitit_folder"] == f"{tmp}/run/submitit/%j"
    assert p["account"] == "genomics" and p["partition"] is None
    assert p["max_num_timeout"] > 0 and p["additional_parameters"]["requeue"] is True
    assert "--container-image=/images/focus-nemo.sqsh" in p["srun_args"]
    assert f"--container-mounts={tmp}/checkout:{tmp}/checkout" in p["srun_args"]


def test_launcher_fixes_the_default_run_dir_at_submission(submitit_env):
    """run_dir defaults to a timestamp. Instantiating the launcher resolves it (submitit_folder), and a
    job, or a requeued job, unpickles the submitted config and resolves the same run_dir: it resumes."""
    import pickle

    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train_focus", return_hydra_config=True,
                      overrides=["hydra/launcher=slurm_1node_8gpu", "trainer=dgx_8gpu",
                                 f"hydra.sweep.dir={submitit_env}/sweep"])
        assert "${now:" in yaml.safe_load((CONF / "train_focus.yaml").read_text())["run_dir"]
        folder = instantiate(cfg.hydra.launcher).params["submitit_folder"]
        time.sleep(1.1)  # a later job start sees another clock
        job = GlobalHydra.instance().config_loader().load_sweep_config(pickle.loads(pickle.dumps(cfg)),
                                                                       ["trainer=dgx_8gpu"])
        assert f"{job.run_dir}/submitit/%j" == folder
        assert compose(config_name="train_focus").run_dir != job.run_dir  # the clock did move


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_launcher_needs_the_image(submitit_env, monkeypatch, launcher):
    from hydra.utils import instantiate

    monkeypatch.delenv("FOCUS_IMAGE")
    cfg = launcher_config(launcher, submitit_env)
    with pytest.raises(Exception, match="FOCUS_IMAGE"):
        instantiate(cfg.hydra.launcher)


def write_fake(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def fake_slurm(tmp_path: Path) -> tuple[Path, Path]:
    """Fake srun (runs its command after the options; `FAKE_SRUN_MODE=record` records the whole
    command line and waits for $LOG/release when FAKE_SRUN_BLOCK is set), scontrol and python."""
    bin_dir, log = tmp_path / "fakebin", tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    write_fake(bin_dir / "srun", """
if [[ "${FAKE_SRUN_MODE:-}" == record ]]; then
  printf '%s\\n' "$@" > "$FAKE_LOG/srun_args"
  env | grep -E '^(MASTER_ADDR|MASTER_PORT|FOCUS_NEMO_CACHE|SRUN_CPUS_PER_TASK|GRCH38|EVO2_CHECKPOINTS)=' \\
    | sort > "$FAKE_LOG/srun_env"
  if [[ -n "${FAKE_SRUN_BLOCK:-}" ]]; then
    for _ in $(seq 200); do [[ -e "$FAKE_LOG/release" ]] && exit 0; sleep 0.05; done
    exit 3
  fi
  exit 0
fi
while [[ $# -gt 0 ]]; do
  case "$1" in
    --output|--error) shift 2 ;;
    --*) echo "$1" >> "$FAKE_LOG/srun_flags"; shift ;;
    *) break ;;
  esac
done
exec "$@"
""")
    write_fake(bin_dir / "scontrol", """
case "$1" in
  show) echo node1; echo node2 ;;
  requeue) echo "requeue $2" >> "$FAKE_LOG/scontrol"; touch "$FAKE_LOG/release" ;;
esac
""")
    write_fake(bin_dir / "python", """
printf '%s\\n' "$@" > "$FAKE_LOG/python_args"
echo "$MASTER_ADDR $MASTER_PORT $NCCL_DEBUG $TORCH_NCCL_ASYNC_ERROR_HANDLING" > "$FAKE_LOG/python_env"
""")
    return bin_dir, log


def slurm_env(bin_dir: Path, log: Path, **extra: str) -> dict:
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(log),
           "FAKE_LOG": str(log), "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node[1-2]",
           "SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS_PER_NODE": "8", "SLURM_CPUS_PER_TASK": "12"}
    env.update(extra)
    return env


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_launcher_batch_script_runs_the_job_in_the_container(submitit_env, monkeypatch, launcher):
    """The launcher's own sbatch text (submitit, as it would be submitted) is valid bash; its srun line
    carries the pyxis flags and runs the container's python on submitit's job, not the login node's."""
    import submitit
    from hydra.utils import instantiate
    from submitit.slurm.slurm import SlurmExecutor

    tmp = submitit_env
    captured = {}

    class Submitted(Exception):
        pass

    def capture(self, fn, *args):
        ex = self._executor
        captured["text"] = ex._make_submission_file_text(ex._submitit_command_str, "uid")
        captured["folder"] = str(ex.folder)
        raise Submitted

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # "srun is available"
    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    cfg = launcher_config(launcher, tmp)
    launcher_obj = instantiate(cfg.hydra.launcher)
    launcher_obj.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
    with pytest.raises(Submitted):
        launcher_obj.launch([["trainer=dgx_8gpu"]], initial_job_idx=0)
    text = captured["text"]
    script = tmp / "job.sbatch"
    script.write_text(text)
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "#SBATCH --requeue" in text and "#SBATCH --exclusive" in text and "#SBATCH --gpus-per-node=8" in text
    assert re.search(r"#SBATCH --signal=USR\d@300", text)

    bin_dir, log = fake_slurm(tmp)
    proc = subprocess.run(["bash", str(script)], env=slurm_env(bin_dir, log), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    flags = (log / "srun_flags").read_text().split()
    assert "--container-image=/images/focus-nemo.sqsh" in flags
    assert f"--container-workdir={tmp}/checkout" in flags
    assert (log / "python_args").read_text().split() == ["-u", "-m", "submitit.core._submit", captured["folder"]]
    assert (log / "python_env").read_text().split() == ["node1", str(20000 + 4242), "WARN", "1"]


# --------------------------------------------------------------------------- sbatch scripts
SCRIPTS = sorted(p.name for p in SLURM.glob("*.sbatch"))
TRAIN_SCRIPTS = [s for s in SCRIPTS if s.startswith("train_")]


def sbatch_options(name: str) -> dict[str, str | bool]:
    opts = {}
    for line in (SLURM / name).read_text().splitlines():
        if line.startswith("#SBATCH "):
            key, _, value = line[len("#SBATCH "):].strip().partition("=")
            opts[key] = value or True
    return opts


def test_the_three_scripts_exist():
    assert {"train_chr1_1node.sbatch", "train_chr1_multinode.sbatch", "evaluate.sbatch"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_sbatch_script_is_valid_bash(name):
    subprocess.run(["bash", "-n", str(SLURM / name)], check=True)


@pytest.mark.parametrize("name", TRAIN_SCRIPTS)
def test_train_script_allocation_matches_the_dgx_trainer(name):
    opts = sbatch_options(name)
    t = trainer_yaml("dgx_8gpu")
    assert int(opts["--ntasks-per-node"]) == int(opts["--gpus-per-node"]) == t["devices"]
    assert opts["--requeue"] is True and re.fullmatch(r"B:USR1@\d+", opts["--signal"])


def job_settings(tmp_path: Path) -> dict[str, str]:
    return {"FAKE_SRUN_MODE": "record", "SLURM_JOB_NAME": "focus-test", "FOCUS_IMAGE": "/images/focus.sqsh",
            "FOCUS_DATA": str(tmp_path / "data"), "FOCUS_RUNS": str(tmp_path / "runs")}


def run_script(name: str, tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir, log = fake_slurm(tmp_path)
    full_env = slurm_env(bin_dir, log, **{**job_settings(tmp_path), **env})
    proc = subprocess.run(["bash", str(SLURM / name), *args], env=full_env, capture_output=True, text=True,
                          timeout=60)
    srun = (log / "srun_args").read_text().splitlines() if (log / "srun_args").exists() else []
    return proc, srun


def split_srun(srun: list[str]) -> tuple[list[str], str, list[str]]:
    """(pyxis flags, recipe command, its Hydra overrides)."""
    i = next(i for i, a in enumerate(srun) if not a.startswith("--"))
    return srun[:i], srun[i], srun[i + 1:]


@pytest.mark.parametrize("name", TRAIN_SCRIPTS)
def test_train_script_runs_chr1_with_a_fixed_resumable_run_dir(name, tmp_path, monkeypatch):
    proc, srun = run_script(name, tmp_path, "trainer.max_steps=10", SLURM_JOB_NUM_NODES="2",
                            FOCUS_EXTRA_MOUNTS="/ckpt:/ckpt:ro")
    assert proc.returncode == 0, proc.stderr
    flags, command, overrides = split_srun(srun)
    assert "--container-image=/images/focus.sqsh" in flags
    assert f"--container-mounts={tmp_path}/data:/data:ro,{tmp_path}/runs:/runs,/ckpt:/ckpt:ro" in flags
    assert command == "train-focus" and (REPO / "recipes" / "train_focus.py").is_file()
    assert overrides[:2] == ["+experiment=chr1", "trainer=dgx_8gpu"]
    assert {"trainer.num_nodes=2", "trainer.devices=8", "run_dir=/runs/focus-test", "resume=true"} <= set(overrides)
    assert overrides[-1] == "trainer.max_steps=10"  # the caller's overrides come last
    assert (tmp_path / "runs" / "focus-test").is_dir()
    env = dict(line.split("=", 1) for line in (tmp_path / "log" / "srun_env").read_text().split())
    assert env == {"FOCUS_NEMO_CACHE": "/runs/.cache", "MASTER_ADDR": "node1", "MASTER_PORT": str(20000 + 4242),
                   "SRUN_CPUS_PER_TASK": "12", "GRCH38": "/data/hg38.fa.gz", "EVO2_CHECKPOINTS": "/data"}
    # The job's config, composed as in the container: the experiment's paths land in the /data mount,
    # the script's run_dir wins over the experiment's, and the 7B model is split TP=8 on each node.
    monkeypatch.setenv("GRCH38", env["GRCH38"])
    monkeypatch.setenv("EVO2_CHECKPOINTS", env["EVO2_CHECKPOINTS"])
    cfg = config_from_hydra(compose_train(*overrides))
    assert cfg.run_dir == "/runs/focus-test" and cfg.resume
    assert cfg.data.train_fasta == "/data/hg38.fa.gz" and cfg.model.checkpoint.startswith("/data/")
    assert cfg.trainer.backend == "nemo" and cfg.trainer.num_nodes == 2 and cfg.trainer.max_steps == 10
    assert cfg.trainer.tensor_model_parallel_size == 8 and Evo2Config.preset(cfg.model.preset).num_heads % 8 == 0


def test_evaluate_script_runs_the_evaluation_recipe_on_the_gpu(tmp_path):
    proc, srun = run_script("evaluate.sbatch", tmp_path, "lengths=[65536]")
    assert proc.returncode == 0, proc.stderr
    flags, command, overrides = split_srun(srun)
    assert "--container-image=/images/focus.sqsh" in flags
    assert command == "evaluate-focus" and (REPO / "recipes" / "evaluate_focus.py").is_file()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = eval_config_from_hydra(compose(config_name="evaluate_focus", overrides=overrides))
    assert cfg.device == "cuda" and cfg.run_dir == "/runs/focus-test" and cfg.threads == 12
    assert cfg.lengths == [65536]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_names_a_missing_setting(name, tmp_path):
    proc, srun = run_script(name, tmp_path, FOCUS_IMAGE="")
    assert proc.returncode != 0 and "FOCUS_IMAGE" in proc.stderr and not srun


def start_blocking(name: str, tmp_path: Path, **env: str) -> tuple[subprocess.Popen, Path]:
    bin_dir, log = fake_slurm(tmp_path)
    full_env = slurm_env(bin_dir, log, FAKE_SRUN_BLOCK="1", **{**job_settings(tmp_path), **env})
    proc = subprocess.Popen(["bash", str(SLURM / name)], env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not (log / "srun_args").exists():  # srun has started: the trap is in place
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    return proc, log


@pytest.mark.parametrize("name", TRAIN_SCRIPTS)
def test_train_script_requeues_itself_near_the_time_limit(name, tmp_path):
    proc, log = start_blocking(name, tmp_path, SLURM_RESTART_COUNT="2")
    proc.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@300 delivers
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert (log / "scontrol").read_text().split() == ["requeue", "4242"]
    assert "requeueing job 4242" in out


@pytest.mark.parametrize("name", TRAIN_SCRIPTS)
def test_train_script_stops_requeueing_after_the_limit(name, tmp_path):
    proc, log = start_blocking(name, tmp_path, SLURM_RESTART_COUNT="3", FOCUS_MAX_REQUEUES="3")
    proc.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    (log / "release").touch()  # the training step ends by itself
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not (log / "scontrol").exists() and "not requeued" in out


def test_train_script_passes_on_the_training_exit_status(tmp_path):
    bin_dir, log = fake_slurm(tmp_path)
    write_fake(bin_dir / "srun", "exit 7\n")
    env = slurm_env(bin_dir, log, SLURM_JOB_NAME="focus-test", FOCUS_IMAGE="/i.sqsh", FOCUS_DATA=str(tmp_path),
                    FOCUS_RUNS=str(tmp_path / "runs"))
    proc = subprocess.run(["bash", str(SLURM / "train_chr1_1node.sbatch")], env=env, capture_output=True,
                          timeout=60)
    assert proc.returncode == 7


# --------------------------------------------------------------------------- container
def load_install_deps():
    spec = importlib.util.spec_from_file_location("install_deps", REPO / "docker" / "install_deps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_deps_installs_only_what_the_image_lacks():
    deps = load_install_deps()
    reqs = [Requirement(r) for r in ("torch==2.13.0", "numpy>=1.26,<2", "einops>=0.7", "pyfaidx>=0.8")]
    todo = deps.plan(reqs, {"torch": "2.8.0a0+5228986c39.nv25.6", "numpy": "2.1.0", "einops": "0.8.1",
                            "pyfaidx": None})
    assert [r.name for r in todo["image"]] == ["torch"]  # never replaced, whatever its version
    assert [(r.name, v) for r, v in todo["mismatch"]] == [("numpy", "2.1.0")]  # kept, reported
    assert [r.name for r in todo["keep"]] == ["einops"]
    assert [r.name for r in todo["install"]] == ["pyfaidx"]


def test_install_deps_refuses_a_too_old_nemo_stack():
    deps = load_install_deps()
    assert deps.stack_problems({"megatron-core": "0.14.0rc2", "nemo-toolkit": "2.6.0rc0"}) == []  # BioNeMo 2.7.1
    problems = deps.stack_problems({"megatron-core": "0.12.0rc0", "nemo-toolkit": "2.3.0rc0"})  # BioNeMo 2.6.1
    assert len(problems) == 2 and "megatron-core 0.12.0rc0" in problems[0]
    assert "not installed" in deps.stack_problems({"megatron-core": "0.15.3", "nemo-toolkit": None})[0]


def test_install_deps_dry_run_on_this_environment():
    """Here every core requirement is installed (torch as the CPU wheel): nothing to install."""
    if sys.version_info < (3, 11):
        pytest.skip("docker/install_deps.py reads pyproject.toml with tomllib (Python >= 3.11, as in the image)")
    deps = load_install_deps()
    reqs = deps.read_requirements(str(REPO / "pyproject.toml"))
    assert "torch" in [r.name for r in reqs]
    todo = deps.plan(reqs, deps._installed([r.name for r in reqs]))
    assert todo["install"] == [] and todo["mismatch"] == []


def test_docker_constraints_pin_every_core_requirement_within_its_range():
    if sys.version_info < (3, 11):
        pytest.skip("docker/install_deps.py reads pyproject.toml with tomllib (Python >= 3.11, as in the image)")
    deps = load_install_deps()
    pins = {}
    for line in (REPO / "docker" / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            pins[req.name] = next(iter(req.specifier)).version
    for req in deps.read_requirements(str(REPO / "pyproject.toml")):
        if req.name in deps.IMAGE_PROVIDED:
            continue
        assert req.name in pins, f"docker/constraints.txt does not pin {req.name}"
        assert req.specifier.contains(pins[req.name]), (req, pins[req.name])


def test_image_and_dev_extra_pin_the_same_submitit_versions():
    """Jobs pickled on the login node (dev extra) are unpickled in the image: same versions."""
    pattern = re.compile(r'"((?:hydra-)?submitit(?:-launcher)?)==([^"]+)"')
    image = dict(pattern.findall((REPO / "Dockerfile").read_text()))
    dev = dict(pattern.findall((REPO / "pyproject.toml").read_text()))
    assert image == dev and set(image) == {"submitit", "hydra-submitit-launcher"}
