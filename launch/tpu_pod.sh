#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: every TPU VM worker runs the same command; JAX finds its peers
# through the TPU metadata server (no coordinator flags needed).
#
# Usage (from the repository root, on a machine with gcloud authenticated):
#   export PROJECT=my-project ZONE=us-west4-a TPU_NAME=layerlock-256 \
#          ACCELERATOR_TYPE=v5litepod-256 RUNTIME_VERSION=v2-alpha-tpuv5-lite \
#          BUCKET=my-bucket RUN=vit4b
#   launch/tpu_pod.sh create        # create the slice (add SPOT=1 for spot capacity)
#   launch/tpu_pod.sh setup         # copy this checkout to every worker, install, mount the bucket
#   launch/tpu_pod.sh train --config=configs/vit4b.py       # start on all workers, in background
#   launch/tpu_pod.sh logs          # follow worker 0's log
#   launch/tpu_pod.sh stop          # SIGTERM on every worker: checkpoint the current step, exit
#   launch/tpu_pod.sh delete
# Plan memory first, on any machine, without the pod:
#   python -m layerlock_jax.aot --config=configs/vit4b.py --num_devices=256 --accelerator=v5e
#
# Where things live:
#   code     ~/layerlock_jax on every worker (a copy of this checkout: tracked + untracked files,
#            minus .gitignore'd ones), venv ~/layerlock_venv.
#   workdir  gs://$BUCKET/layerlock/$RUN, mounted with gcsfuse at /gcs/$BUCKET on every worker
#            and passed as --workdir=/gcs/$BUCKET/layerlock/$RUN. It must be shared: every
#            worker writes its own shards of each checkpoint there; only worker 0 writes
#            metrics.jsonl, TensorBoard events and config.json. A worker's local disk would not do.
#   logs     ~/layerlock_$RUN.log on each worker (`logs` shows worker 0's).
# `train` again after a preemption or `stop` resumes from the workdir's latest checkpoint.
# Multi-slice (several slices over DCN): create them as one queued resource (--node-count) and
# put the slow axis first in the mesh, e.g. --config.mesh.data=<slices>.
set -euo pipefail

: "${PROJECT:?set PROJECT}" "${ZONE:?set ZONE}" "${TPU_NAME:?set TPU_NAME}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v5litepod-256}"
RUNTIME_VERSION="${RUNTIME_VERSION:-v2-alpha-tpuv5-lite}"
RUN="${RUN:-run}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

on_all() {  # run a shell command on every worker of the slice
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" --worker=all \
      --command="$1"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  create)
    extra=()
    if [[ -n "${SPOT:-}" ]]; then extra+=(--spot); fi
    gcloud compute tpus tpu-vm create "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" \
        --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${extra[@]}"
    ;;
  setup)
    : "${BUCKET:?set BUCKET (the GCS bucket holding workdirs, without gs://)}"
    archive="$(mktemp -t layerlock_src.XXXXXX).tar.gz"
    (cd "$repo" && git ls-files -co --exclude-standard -z | tar czf "$archive" --null -T -)
    gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:~/layerlock_src.tar.gz" \
        --project="$PROJECT" --zone="$ZONE" --worker=all
    rm -f "$archive"
    # jax[tpu] pulls the libtpu matching the jax version; gcsfuse gives every worker the same
    # workdir with ordinary file APIs (metrics.jsonl, config.json) and shared checkpoint files.
    on_all "set -e
      rm -rf ~/layerlock_jax && mkdir -p ~/layerlock_jax
      tar xzf ~/layerlock_src.tar.gz -C ~/layerlock_jax
      python3 -m venv ~/layerlock_venv
      ~/layerlock_venv/bin/pip install -q -U pip
      ~/layerlock_venv/bin/pip install -q -e ~/layerlock_jax 'jax[tpu]'
      if ! command -v gcsfuse >/dev/null; then
        export GCSFUSE_REPO=gcsfuse-\$(lsb_release -c -s)
        echo \"deb https://packages.cloud.google.com/apt \$GCSFUSE_REPO main\" \\
          | sudo tee /etc/apt/sources.list.d/gcsfuse.list
        curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -
        sudo apt-get update -q && sudo apt-get install -y -q gcsfuse
      fi
      sudo mkdir -p /gcs/$BUCKET && sudo chown \$USER /gcs/$BUCKET
      mountpoint -q /gcs/$BUCKET || gcsfuse --implicit-dirs $BUCKET /gcs/$BUCKET"
    ;;
  train)
    : "${BUCKET:?set BUCKET}"
    workdir="/gcs/$BUCKET/layerlock/$RUN"
    args="$(printf ' %q' "$@")"
    # nohup + background: training survives the ssh session. Large slices take a while to
    # rendezvous, hence the longer init timeout. Same command on every worker.
    on_all "cd ~/layerlock_jax && LAYERLOCK_INIT_TIMEOUT=\${LAYERLOCK_INIT_TIMEOUT:-900} \
      nohup ~/layerlock_venv/bin/python -m layerlock_jax.main --workdir=$workdir $args \
      > ~/layerlock_$RUN.log 2>&1 < /dev/null & echo \$! > ~/layerlock_$RUN.pid"
    echo "started on all workers; workdir gs://$BUCKET/layerlock/$RUN; follow: $0 logs"
    ;;
  logs)
    gcloud compute tpus tpu-vm ssh "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" --worker=0 \
        --command="tail -n 100 -f ~/layerlock_$RUN.log"
    ;;
  stop)
    on_all "kill -TERM \$(cat ~/layerlock_$RUN.pid) 2>/dev/null || true"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" --quiet
    ;;
  *)
    sed -n '2,30p' "$0"
    exit 2
    ;;
esac
