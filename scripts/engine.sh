#!/usr/bin/env bash
# Make a Docker engine and the local base images available (idempotent).
# On Debian as root with no engine answering: install docker.io + mmdebstrap, start dockerd in the
# background, and build the base image from Debian's archive (no registry needed); then the bases with
# another Python (3.8) from this host's pyenv installations.
# Elsewhere: explain what is missing and exit 1.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# The Debian client is the one with BuildKit support here; another `docker` may come first on PATH.
DOCKER=${BEPBUILD_DOCKER:-/usr/bin/docker}
BASE=${BEPBUILD_BASE_IMAGE:-local/debian-py:bookworm}
LOG_DIR=${BEPBUILD_ENGINE_LOG_DIR:-/var/log/bepbuild}
now() { date +%s%N; }
took() { echo "$(( ($(now) - $1) / 1000000 )) ms"; }
say() { echo "engine: $*"; }

engine_up() { [ -x "$DOCKER" ] && "$DOCKER" info >/dev/null 2>&1; }
is_debian_root() { [ -f /etc/debian_version ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

need_pkgs=()
[ -x "$DOCKER" ] || need_pkgs+=(docker.io)
command -v mmdebstrap >/dev/null || need_pkgs+=(mmdebstrap)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if ! is_debian_root; then
    say "missing ${need_pkgs[*]}; install Docker (https://docs.docker.com/engine/install/) and re-run" >&2
    exit 1
  fi
  t=$(now)
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  say "installed ${need_pkgs[*]} in $(took "$t")"
fi

if ! engine_up; then
  if ! is_debian_root; then
    say "no Docker engine answers at $DOCKER; start dockerd (or Docker Desktop) and re-run" >&2
    exit 1
  fi
  t=$(now)
  mkdir -p "$LOG_DIR"
  setsid dockerd >"$LOG_DIR/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 300); do engine_up && break; sleep 0.2; done
  if ! engine_up; then tail -20 "$LOG_DIR/dockerd.log" >&2; say "dockerd did not start" >&2; exit 1; fi
  say "dockerd up in $(took "$t")"
fi

if ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
  if ! command -v mmdebstrap >/dev/null; then
    say "base image $BASE is missing and mmdebstrap is not installed; pull or build a python3 base image and set BEPBUILD_BASE_IMAGE" >&2
    exit 1
  fi
  t=$(now)
  SRC=/etc/apt/sources.list.d/debian.sources; [ -f "$SRC" ] || SRC=/etc/apt/sources.list
  mkdir -p "$LOG_DIR"
  mmdebstrap --quiet --variant=minbase \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --include=python3-venv \
    bookworm - "$SRC" 2>"$LOG_DIR/mmdebstrap.log" \
  | "$DOCKER" import -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$BASE" >/dev/null
  say "base image $BASE built in $(took "$t")"
fi
# Local bases with another Python (environments and MLflow models that pin one, as Azure's pin 3.8):
# the default base plus this host's pyenv installation of it (`bepbuild base build`, idempotent).
# Needs bepbuild (BEPBUILD_CLI, which `make engine` passes); outside CI a failure is a warning.
PYTHONS=${BEPBUILD_BASE_PYTHONS:-3.8}
if [ -n "${BEPBUILD_CLI:-}" ] && [ -x "$BEPBUILD_CLI" ]; then
  for v in $PYTHONS; do
    t=$(now)
    if out=$(BEPBUILD_BASE_IMAGE="$BASE" "$BEPBUILD_CLI" base build --python "$v" -q -o tsv --query built 2>&1); then
      case "$out" in
        true|True) say "base image local/debian-py:$v built in $(took "$t")" ;;
        *) say "base image local/debian-py:$v up to date ($(took "$t"))" ;;
      esac
    elif [ "${CI:-}" = true ]; then
      echo "$out" >&2; say "base image local/debian-py:$v could not be built" >&2; exit 1
    else
      echo "$out" >&2; say "warning: no base image local/debian-py:$v: deployments pinning Python $v will build it or fail" >&2
    fi
  done
fi
say "ready: $("$DOCKER" version -f '{{.Server.Version}}') , base image $BASE"
