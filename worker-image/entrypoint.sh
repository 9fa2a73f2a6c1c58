#!/bin/sh
# Entrypoint of the Trainyard worker image.
#
#   trainyard-worker train [worker train options]   -> torchrun ... -m trainyard.worker train
#   trainyard-worker infer [worker infer options]   -> python -m trainyard.worker infer
#   trainyard-worker <anything else>                -> run it as given (debugging)
#
# `exec` replaces this shell, so torchrun receives the kubelet's SIGTERM directly and forwards
# it to every rank, which checkpoint and exit (see trainyard/worker/preemption.py).
#
# Environment (set by the Trainyard backend; defaults run one node):
#   TRAINYARD_NNODES           nodes in the job (default 1: --standalone rendezvous)
#   TRAINYARD_NPROC_PER_NODE   processes per node: a number, or gpu|cpu|auto (default auto)
#   TRAINYARD_RDZV_ENDPOINT    host:port of the c10d rendezvous when NNODES > 1
#   TRAINYARD_JOB              job name: rendezvous id and the `job` label of metrics
set -eu

command="${1:-train}"
[ "$#" -gt 0 ] && shift

case "$command" in
train)
    nnodes="${TRAINYARD_NNODES:-1}"
    nproc="${TRAINYARD_NPROC_PER_NODE:-auto}"
    if [ "$nnodes" = 1 ]; then
        exec python -m torch.distributed.run --standalone --nnodes 1 \
            --nproc-per-node "$nproc" -m trainyard.worker train "$@"
    fi
    : "${TRAINYARD_RDZV_ENDPOINT:?TRAINYARD_RDZV_ENDPOINT (host:port) is required when TRAINYARD_NNODES > 1}"
    exec python -m torch.distributed.run --nnodes "$nnodes" --nproc-per-node "$nproc" \
        --rdzv-backend c10d --rdzv-endpoint "$TRAINYARD_RDZV_ENDPOINT" \
        --rdzv-id "${TRAINYARD_JOB:-trainyard}" -m trainyard.worker train "$@"
    ;;
infer)
    exec python -m trainyard.worker infer "$@"
    ;;
*)
    exec "$command" "$@"
    ;;
esac
