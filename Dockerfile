# focus-nemo on the NGC BioNeMo framework image: CUDA PyTorch, Transformer Engine, Megatron Core and
# NeMo 2 with the Evo-2 (Hyena) model. The image's stack is used as it is; this adds the focus_nemo
# package, the pure-Python dependencies the image lacks, and one command per recipe.
# Build and run lines, the base tag and why: docker/README.md.
ARG BASE_IMAGE=nvcr.io/nvidia/clara/bionemo-framework:2.7.1

# focus_nemo is pure Python. Its wheel is built on a plain Python image, so that the build backend
# pyproject.toml asks for (setuptools >= 77) never meets the pip constraints of the NGC image.
FROM python:3.12-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY focus_nemo ./focus_nemo
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="focus-nemo" \
      org.opencontainers.image.description="FOCUS context compression for Evo-2 on NeMo / BioNeMo" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONUNBUFFERED=1
WORKDIR /workspace/focus-nemo

# Dependencies first (this layer changes only with pyproject.toml): the core requirements the image
# lacks, at the versions CI tests; torch, NeMo, Megatron and TE stay the image's. The build fails if
# the image's Megatron Core / NeMo are older than focus_nemo.nemo needs. submitit and its Hydra
# launcher let jobs submitted with hydra/launcher=slurm_* (conf/hydra/launcher/) run in this image;
# keep their pins equal to the dev extra of pyproject.toml.
COPY pyproject.toml ./
COPY docker/install_deps.py docker/constraints.txt ./docker/
RUN python docker/install_deps.py pyproject.toml --constraints docker/constraints.txt \
 && pip install --no-cache-dir --constraint docker/constraints.txt \
      "submitit==1.5.4" "hydra-submitit-launcher==1.2.0"

# The package itself, without dependencies: pip must not resolve pyproject's CPU torch pin here.
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-cache-dir --no-deps /tmp/dist/*.whl \
 && rm -rf /tmp/dist

# Recipes read their Hydra configs from ../conf, so both live side by side here. tests/ carries the
# GPU tests (pytest -m gpu tests/gpu); benchmarks/ the speed and memory scripts.
COPY README.md ./
COPY conf ./conf
COPY recipes ./recipes
COPY benchmarks ./benchmarks
COPY tests ./tests

# One command per recipe (recipes/train_focus.py -> train-focus, score_fasta.py -> score-fasta, ...), so
# `docker run IMAGE train-focus ...` and `srun --container-image=IMAGE train-focus ...` work alike.
# runs/ (the default run_dir parent) is writable by any user: under pyxis or `docker run --user` the
# job runs as the caller, and the recipes write only their run directory and the FASTA cache
# ($FOCUS_NEMO_CACHE, else next to the FASTA file or in ~/.cache).
RUN for recipe in recipes/*.py; do \
      name="$(basename "${recipe}" .py | tr '_' '-')"; \
      printf '#!/bin/sh\nexec python /workspace/focus-nemo/%s "$@"\n' "${recipe}" > "/usr/local/bin/${name}"; \
      chmod 0755 "/usr/local/bin/${name}"; \
    done \
 && mkdir -p runs && chmod 1777 runs \
 && python -c "import focus_nemo.data, focus_nemo.evaluate, focus_nemo.focus, focus_nemo.train" \
 && train-focus --cfg job > /dev/null

CMD ["train-focus", "--help"]
