# CPU image by default. For GPU workers build with a CUDA base and a CUDA PyTorch wheel:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 -t interp-registry:gpu .
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN pip install "torch>=2.2" --index-url ${TORCH_INDEX}
COPY . .
# the light distribution (SDK, client, CLI) from this tree, then the server that depends on it
RUN pip install ./packages/interp-registry ".[production,real-data]"
RUN useradd --create-home registry && mkdir -p /var/lib/registry && chown registry /var/lib/registry
USER registry
EXPOSE 8000
