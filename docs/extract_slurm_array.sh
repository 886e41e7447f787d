#!/bin/bash
# Feature extraction as a SLURM job array: each array task takes a fixed shard of the videos and writes its own
# store file (features.rank<i>-of-<n>.h5 beside --out); no task ever writes another task's file. Re-submitting the
# same array resumes: every task skips the videos its shard already holds. When all tasks are done, one merge
# joins the shards (a copy; add --virtual for HDF5 virtual datasets that point into the shard files).
#
#   sbatch docs/extract_slurm_array.sh                         # tasks 0..15 -> 16 shards
#   sbatch --dependency=afterok:<jobid> --wrap "xattn store merge $OUT $OUT_DIR/features.rank*-of-16.h5 && xattn store check $OUT"
#
# RECIPE picks the sampling (README, "Extraction recipes"):
#   RECIPE=ssv2        DINOv3 per frame + I3D R50 on flow, 16 uniform frames per video (the main job's features)
#   RECIPE=i3d-chunks  I3D R50 over frame folders (<class>/<video>/img_00001.jpg) in 16-frame stack/step chunks; videos
#                      shorter than one chunk are stored as skipped with the reason; each task writes a run summary
#                      (features.rank<i>-of-<n>.summary.json: run_date, total_videos, videos_skipped, processed_videos,
#                      per-video seconds); after the merge, one .npz per video in a tree mirroring the input tree:
#   sbatch --dependency=afterok:<jobid> --wrap "xattn store merge $OUT $OUT_DIR/features.rank*-of-16.h5 && \
#          xattn store export $OUT --format npz --token mean --out $OUT_DIR/npz"
#
# xattn reads SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT / SLURM_ARRAY_TASK_MIN (xattn.core.shard_env), so the
# array range may start anywhere (--array=1-16 works too). Keep the array size fixed across re-submissions: the
# shard of a video depends on it.
#SBATCH --job-name=xattn-extract
#SBATCH --array=0-15
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=10
#SBATCH --mem=48G
#SBATCH --time=12:00:00
#SBATCH --output=logs/extract-%A_%a.out
set -euo pipefail

SOURCE=${SOURCE:-/datasets/ssv2}                 # SSv2 layout: labels.json, train.json, validation.json, videos/
# Checkpoints are read from $XATTN_WEIGHTS (`xattn weights` lists what is present); nothing is downloaded.
OUT_DIR=${OUT_DIR:-/scratch/$USER/ssv2-features}
OUT=$OUT_DIR/features.h5

# Decoding and flow run in DataLoader workers: give them the CPUs SLURM allotted, minus one for the model process.
WORKERS=$(( ${SLURM_CPUS_PER_TASK:-4} - 1 ))

case "${RECIPE:-ssv2}" in
    ssv2)       SAMPLING=(--extractors dinov3_vits16plus,i3d_r50_flow --frames 16) ;;
    i3d-chunks) SAMPLING=(--source-kind frame-folders --extractors i3d_r50 --sampling chunks --chunk-size 16 --short skip
                          --overrides i3d_r50.frames_per_clip=16) ;;
    *) echo "RECIPE=$RECIPE: use ssv2 or i3d-chunks" >&2; exit 2 ;;
esac

xattn extract --source "$SOURCE" --out "$OUT" "${SAMPLING[@]}" \
    --batch-size 64 --num-workers "$WORKERS" --device cuda \
    --no-progress            # SLURM logs: one line per video instead of a progress bar

# Tasks of a job array share no process group, so no task merges; the dependent merge job above does.
