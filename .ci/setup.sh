#!/usr/bin/env bash
# Installs and starts what ctgate's demo and tests need, on Debian with Node 20. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
[ -x /usr/bin/mllp_send ] || missing+=(python3-hl7)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
command -v dciodvfy >/dev/null 2>&1 || missing+=(dicom3tools)
command -v dcmdump >/dev/null 2>&1 || missing+=(dcmtk)
command -v gdcmconv >/dev/null 2>&1 || missing+=(libgdcm-tools)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
/usr/bin/python3 -c 'import pydicom, numpy' >/dev/null 2>&1 || missing+=(python3-pydicom python3-numpy)
/usr/bin/python3 -c 'import torch, PIL' >/dev/null 2>&1 || missing+=(python3-torch python3-pil)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "ctgate setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "ctgate setup: missing Debian packages: ${missing[*]} — run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

# onnxruntime-node's installer tries to download CUDA libraries; the CPU build ships in the package.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "ctgate setup: npm ci"
  ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error
fi

redis_url="${CTGATE_REDIS_URL:-redis://127.0.0.1:6379}"
if ! redis-cli -u "$redis_url" ping >/dev/null 2>&1; then
  if [[ "$redis_url" =~ ^redis://(127\.0\.0\.1|localhost)(:([0-9]+))?/?$ ]]; then
    port="${BASH_REMATCH[3]:-6379}"
    # AOF on, in a data folder: `ctgate serve` refuses a Redis that does not persist (CTGATE_REDIS_REQUIRE_AOF).
    data="${CTGATE_REDIS_DATA_DIR:-$PWD/.data/redis-$port}"
    mkdir -p "$data"
    echo "ctgate setup: starting redis-server on 127.0.0.1:$port (AOF in $data)"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$data" --save '' --appendonly yes --appendfsync everysec --daemonize yes >/dev/null
    for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -p "$port" ping >/dev/null
  else
    echo "ctgate setup: Redis at $redis_url does not answer" >&2
    exit 1
  fi
fi
