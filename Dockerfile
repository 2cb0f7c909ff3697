# The image that the Dask scheduler and workers, the submit service and the inference
# server share (make image).  CPU build; for GPU workers build with
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t mlaas4hep-dask-gpu .
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    XRD_RUNFORKHANDLER=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# tini reaps the workflow processes that jobs start; the XRootD client comes with the xrootd wheel;
# bubblewrap is the job sandbox (used where the workers run as root)
RUN apt-get update && apt-get install -y --no-install-recommends tini ca-certificates bubblewrap \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/mlaas4hep
COPY pyproject.toml README.md ./
COPY mlaas4hep_dask ./mlaas4hep_dask
COPY configs ./configs
COPY cluster ./cluster
RUN pip install --extra-index-url "${TORCH_INDEX}" ".[ml,htcondor]" \
    && python -c "import mlaas4hep_dask, distributed, torch, xgboost, keras"

RUN useradd --create-home --uid 1000 mlaas
USER 1000
WORKDIR /home/mlaas
EXPOSE 8080 8083 8786 8787
ENTRYPOINT ["tini", "--"]
CMD ["mlaas4hep", "--help"]
