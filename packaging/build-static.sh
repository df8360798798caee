#!/usr/bin/env bash
# Builds stripped, statically linked eddy binaries for gateways with the
# `dist` profile (Cargo.toml): x86_64 and aarch64 against musl, 32-bit ARM
# (armv7, hard float) against glibc with +crt-static (Rust's armv7 musl std
# is not available here). Cross linkers are Debian's gcc cross compilers.
#
#   packaging/build-static.sh [TARGET...]     default: all three targets
#
# Writes target/dist/<target>/eddy and checks that each binary is static
# (no ELF interpreter, no shared libraries). Needs, on Debian:
#   apt-get install gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf
#   rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl \
#                     armv7-unknown-linux-gnueabihf
# Linker settings are passed per target in the environment, never as a
# global flag: +crt-static on the host would break proc-macro builds.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)
PROFILE=${EDDY_PROFILE:-dist}
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

die() { echo "build-static: $*" >&2; exit 1; }

need_tool() {
  command -v "$1" >/dev/null || die "$1 not found: apt-get install $2"
}

need_target() {
  rustup target list --installed | grep -qx "$1" || die "Rust target $1 not installed: rustup target add $1"
}

for target in "${TARGETS[@]}"; do
  need_target "$target"
  envs=()
  case "$target" in
    x86_64-unknown-linux-musl)
      need_tool gcc gcc
      envs+=(CC_x86_64_unknown_linux_musl=gcc)
      ;;
    aarch64-unknown-linux-musl)
      need_tool aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
      envs+=(CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
             CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc)
      ;;
    armv7-unknown-linux-gnueabihf)
      need_tool arm-linux-gnueabihf-gcc gcc-arm-linux-gnueabihf
      envs+=(CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
             CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc
             "CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS=-C target-feature=+crt-static")
      ;;
    *) die "unknown target $target (known: ${ALL_TARGETS[*]})" ;;
  esac
  echo "== $target ($PROFILE profile)"
  env "${envs[@]}" cargo build --locked --profile "$PROFILE" --target "$target" --bin eddy
  built="target/$target/$PROFILE/eddy"
  # Static means: no program interpreter and no shared library needed.
  if readelf -lW "$built" | grep -q 'Requesting program interpreter'; then
    die "$built has an ELF interpreter: it is not statically linked"
  fi
  if readelf -dW "$built" | grep -q '(NEEDED)'; then
    die "$built needs shared libraries: $(readelf -dW "$built" | grep NEEDED)"
  fi
  mkdir -p "target/dist/$target"
  cp "$built" "target/dist/$target/eddy"
  echo "target/dist/$target/eddy: $(stat -c %s "$built") bytes, static"
done
