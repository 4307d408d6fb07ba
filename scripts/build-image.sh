#!/usr/bin/env bash
# Builds the meshgate image FROM THE DOCKERFILE without a registry or a
# daemon, for the real-node tests (tests/node_*.rs) and anyone without Docker:
#
#   scripts/build-image.sh [OUT.tar]     (default target/node-image/meshgate.tar)
#
# buildah (Debian package) builds with vfs storage and chroot isolation, the
# only combination that needs neither overlay mounts nor user namespaces. The
# Dockerfile's two base images cannot be pulled (no registry in CI), so they
# are assembled here from what this machine has, once, and kept in buildah's
# store:
#
#   localhost/meshgate-builder:rust-<version>  Debian's gcc, binutils, libc6-dev,
#       dash and coreutils (the files of those installed packages and their
#       dependencies) plus this machine's Rust toolchain, without its docs:
#       what rust:1-bookworm gives the builder stage
#   localhost/meshgate-runtime:cc-nonroot      laid out like
#       gcr.io/distroless/cc-debian12:nonroot: the libraries of libc6,
#       libgcc-s1, libgomp1, libstdc++6 and libssl3, tzdata, netbase's files,
#       the CA bundle, /etc/passwd with root, nobody and nonroot (65532),
#       /home/nonroot, /tmp; USER 65532:65532, WORKDIR /home/nonroot, no
#       shell and no other executable
#
# The result is written as a docker-archive that `ctr images import` takes,
# named localhost/meshgate:node-test (images.sh's localhost/meshgate:dev is a
# different image: a host binary copied into that layout).
#
# The release profile is fat LTO on one codegen unit; on 2 shared cores that
# alone takes most of a CI run, so this build passes CARGO_BUILD_EXTRA (no
# LTO, 16 codegen units, opt-level 1) unless MESHGATE_IMAGE_FULL_RELEASE=1.
# The Dockerfile's profile-guided build is off here (PGO=false): it needs
# bash, curl and openssl, which this minimal builder has not, and doubles the
# build; scripts/pgo.sh runs the same steps on the host.
# The cargo registry and target directories are buildah cache mounts
# (/var/tmp/buildah-cache-*), so a rebuild compiles meshgate alone.
#
# Needs root and: apt-get install -y buildah gcc libc6-dev (scripts/
# install-node-tools.sh installs them). Reaches crates.io (the builder
# downloads the crates of Cargo.lock) and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-target/node-image/meshgate.tar}
IMAGE=localhost/meshgate:node-test
RUNTIME_IMAGE=localhost/meshgate-runtime:cc-nonroot
WORK=${MESHGATE_IMAGE_WORK:-/var/tmp/meshgate-image}
B=(buildah --storage-driver vfs)
export BUILDAH_ISOLATION=chroot

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ "$(id -u)" == 0 ]] || die "needs root (buildah with vfs storage and chroot isolation)"
command -v buildah >/dev/null || die "no buildah: apt-get install -y buildah"
rust_version=$(rustc --version | awk '{print $2}')
BUILDER_IMAGE=localhost/meshgate-builder:rust-$rust_version

have_image() { [[ -n "$("${B[@]}" images -q "$1" 2>/dev/null)" ]]; }

# Installed packages among $@ and everything they depend on.
package_closure() {
    local -A seen=()
    local queue=("$@") p deps
    while ((${#queue[@]})); do
        p=${queue[0]}
        queue=("${queue[@]:1}")
        [[ -n "${seen[$p]:-}" ]] && continue
        seen[$p]=0
        dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || continue
        seen[$p]=1
        deps=$(dpkg-query -W -f='${Depends}, ${Pre-Depends}' "$p" | tr ',|' '\n\n' |
            sed -E 's/\(.*\)//; s/:any//; s/[[:space:]]//g' | grep -v '^$' || true)
        # shellcheck disable=SC2206 # package names have no spaces
        queue+=($deps)
    done
    for p in "${!seen[@]}"; do [[ ${seen[$p]} == 1 ]] && echo "$p"; done
}

# Copies the files (not the directories) of packages $2... into rootfs $1,
# skipping paths that match the extended regex $EXCLUDE.
copy_packages() {
    local root=$1
    shift
    dpkg -L "$@" | grep '^/' | sort -u | while read -r f; do
        if [[ -L "$f" || -f "$f" ]] && ! [[ "$f" =~ ${EXCLUDE:-^$} ]]; then
            echo "${f#/}"
        fi
    done >"$WORK/files"
    tar -C / --no-recursion --ignore-failed-read -cf - -T "$WORK/files" | tar -C "$root" -xf -
}

# A Debian root with merged /usr, as bookworm's.
new_rootfs() {
    rm -rf "$1"
    mkdir -p "$1"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc/ssl/certs,tmp,root}
    local d
    for d in bin sbin lib lib64; do ln -s "usr/$d" "$1/$d"; done
    chmod 1777 "$1/tmp"
    chmod 0700 "$1/root"
    cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/"
    cp /usr/lib/os-release "$1/etc/os-release"
}

commit_rootfs() { # rootfs image config-flags...
    local root=$1 image=$2 c mnt
    shift 2
    c=$("${B[@]}" from scratch)
    mnt=$("${B[@]}" mount "$c")
    tar -C "$root" --numeric-owner -cf - . | tar -C "$mnt" --numeric-owner -xpf -
    "${B[@]}" umount "$c" >/dev/null
    "${B[@]}" config "$@" "$c"
    "${B[@]}" commit --rm -q "$c" "$image" >/dev/null
    log "base image $image committed"
}

build_builder() {
    local root=$WORK/builder sysroot
    new_rootfs "$root"
    # shellcheck disable=SC2046
    EXCLUDE='^/usr/share/(doc|man|info|locale|lintian)/' copy_packages "$root" \
        $(package_closure dash coreutils gcc libc6-dev binutils zlib1g libgcc-s1)
    ln -sf dash "$root/usr/bin/sh"
    ln -sf gcc "$root/usr/bin/cc" # the alternatives link: cargo links with `cc`
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\n' >"$root/etc/group"
    sysroot=$(rustc --print sysroot)
    mkdir -p "$root/usr/local/rust" "$root/usr/local/cargo"
    tar -C "$sysroot" --exclude=./share -cf - . | tar -C "$root/usr/local/rust" -xf -
    commit_rootfs "$root" "$BUILDER_IMAGE" \
        --env PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env CARGO_HOME=/usr/local/cargo --workingdir /
    rm -rf "$root"
}

build_runtime() {
    local root=$WORK/runtime
    new_rootfs "$root"
    # Libraries and data only: distroless has no shell and no tools.
    EXCLUDE='^/(usr/)?(bin|sbin|libexec)/|^/usr/share/(doc|man|info|locale|lintian|bug)/' \
        copy_packages "$root" libc6 libgcc-s1 libgomp1 libstdc++6 libssl3 tzdata netbase
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n' >"$root/etc/group"
    printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
    mkdir -p "$root/home/nonroot"
    chown 65532:65532 "$root/home/nonroot"
    chmod 0700 "$root/home/nonroot"
    commit_rootfs "$root" "$RUNTIME_IMAGE" \
        --user 65532:65532 --workingdir /home/nonroot \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
    rm -rf "$root"
}

mkdir -p "$WORK" "$(dirname "$OUT")"
start=$(date +%s)
have_image "$BUILDER_IMAGE" || build_builder
have_image "$RUNTIME_IMAGE" || build_runtime
based=$(date +%s)

extra="--config profile.release.lto=false --config profile.release.codegen-units=16 --config profile.release.opt-level=1"
[[ "${MESHGATE_IMAGE_FULL_RELEASE:-}" == 1 ]] && extra=""
log "building $IMAGE from the Dockerfile (CARGO_BUILD_EXTRA=${extra:-none})"
"${B[@]}" bud --pull=never --isolation chroot -q \
    --build-arg RUST_IMAGE="$BUILDER_IMAGE" \
    --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" \
    --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg CARGO_BUILD_EXTRA="$extra" \
    --build-arg PGO=false \
    -f Dockerfile -t "$IMAGE" . >/dev/null
built=$(date +%s)

rm -f "$OUT"
"${B[@]}" push -q "$IMAGE" "docker-archive:$OUT:$IMAGE" >/dev/null
# The image's config, for tests/node_image.rs (user, entrypoint, paths).
"${B[@]}" inspect --type image "$IMAGE" >"${OUT%.tar}.inspect.json"
log "$OUT: base images $((based - start)) s, build $((built - based)) s, export $(($(date +%s) - built)) s"
