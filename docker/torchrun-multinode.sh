#!/usr/bin/env bash
# i2vda-train on one or more machines with torchrun (PyTorch DDP): run this script once on every node, with the same
# environment and the same arguments; every argument goes to i2vda-train.
#
#   NNODES=2 NPROC_PER_NODE=8 RDZV_ENDPOINT=node0:29500 RUN_ID=viper-i2vda \
#     docker/torchrun-multinode.sh --shards /data/stores --source viper --target cityscapes_seq \
#       --out /data/runs/viper-i2vda --resume latest
#
# NNODES          number of machines (required)
# RDZV_ENDPOINT   HOST:PORT that every node reaches; torchrun's c10d rendezvous listens there on HOST (required)
# NPROC_PER_NODE  processes per machine: a number, or torchrun's "gpu" (one per visible GPU, the default) or "cpu"
# RUN_ID          rendezvous id shared by the nodes of one job (default: i2vda)
# MAX_RESTARTS    times torchrun restarts all processes after a failure (default 0); pass --resume latest so that a
#                 restart continues from the last checkpoint instead of iteration 0
# TRAIN_COMMAND   the program started in every process (default: i2vda-train), e.g. a wrapper script
# SHUTDOWN_TIMEOUT seconds torchrun gives its processes to stop after it passes them SIGTERM or SIGUSR1 (default
#                 100): they finish the iteration and write a checkpoint first (docs/CLUSTER.md, section 3c)
#
# The world size is NNODES x NPROC_PER_NODE. Rank r streams the shards r, r + world, r + 2 world, ... of each store
# (docs/CLUSTER.md); a resumed run needs the same world size. The backend is nccl on GPUs and gloo on CPUs, and only
# rank 0 writes checkpoints, logs and TensorBoard events (to --out, which every node sees, or node 0 alone).
set -euo pipefail

: "${NNODES:?set NNODES to the number of machines}"
: "${RDZV_ENDPOINT:?set RDZV_ENDPOINT to HOST:PORT of one node that every node reaches}"

exec torchrun \
    --nnodes "${NNODES}" \
    --nproc_per_node "${NPROC_PER_NODE:-gpu}" \
    --rdzv_backend c10d \
    --rdzv_endpoint "${RDZV_ENDPOINT}" \
    --rdzv_id "${RUN_ID:-i2vda}" \
    --max_restarts "${MAX_RESTARTS:-0}" \
    --signals-to-handle "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1" \
    --shutdown-timeout "${SHUTDOWN_TIMEOUT:-100}" \
    --no-python \
    "${TRAIN_COMMAND:-i2vda-train}" "$@"
