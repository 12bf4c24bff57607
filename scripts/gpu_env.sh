# Sourced by the scripts/gpu_*.sh runners: the CUDA toolkit's libraries, and
# cuDNN 9 for CudnnAttention (loaded at run time) from the toolkit or, where
# the toolkit has none, from PyTorch's wheel (nvidia-cudnn). Without cuDNN,
# attention runs on tessera's own kernels and the executor says why.
CUDNN_LIB=""
if ! ls /usr/local/cuda/lib64/libcudnn.so.9 >/dev/null 2>&1; then
  CUDNN_LIB=$(python3 -c 'import os, nvidia.cudnn as c; print(os.path.join(list(c.__path__)[0], "lib"))' \
    2>/dev/null || true)
fi
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${CUDNN_LIB:+:$CUDNN_LIB}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
