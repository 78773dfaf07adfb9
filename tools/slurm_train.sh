#!/bin/bash
# train.py on a SLURM cluster: N nodes x G GPUs, preemptible, requeued until the run is done.
#
#     sbatch --nodes=2 --gres=gpu:4 tools/slurm_train.sh --data /shared/flowers --output-dir /shared/runs/a --epochs 90
#
# The data, the cache (OUTPUT_DIR/.cache) and the output folder must be on storage every node
# sees; rank 0 decodes the images into the cache first and the other ranks read it. SLURM sends
# SIGUSR1 to this batch shell two minutes before it preempts the job or its time runs out
# (--signal=B:USR1@120). The shell sends SIGTERM to the training step: torchrun passes it to every
# rank, each stops after its current step (train.py's Stop; SIGUSR1 to a rank directly does the
# same), and rank 0's last.pth holds the last complete epoch. Then the job requeues itself; the
# requeued job runs this same script, and --resume auto continues from OUTPUT_DIR/last.pth (or
# starts afresh when there is none). Not run on a real cluster here: see README, "On a cluster".
#SBATCH --job-name=alexnet
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=alexnet-%j.log
set -u

GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-1}
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)

# the batch shell gets SIGUSR1 (B:); stop the training step politely, then requeue this job
requeue() {
    echo "SIGUSR1: preemption notice; stopping the ranks and requeueing job $SLURM_JOB_ID"
    scancel --signal=TERM "$SLURM_JOB_ID.0" 2>/dev/null
    wait "$TRAIN"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
}
trap requeue USR1

srun --kill-on-bad-exit=1 python -m torch.distributed.run \
    --nnodes="$SLURM_JOB_NUM_NODES" --nproc_per_node="$GPUS_PER_NODE" \
    --rdzv-backend=c10d --rdzv-endpoint="$HEAD:29500" --rdzv-id="$SLURM_JOB_ID" \
    train.py --resume auto "$@" &
TRAIN=$!
wait "$TRAIN"
