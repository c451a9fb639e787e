# Sourced by scripts/bootstrap, demo, test and sam: which Python they use, and how they become root.
# Plain bash, no state: each function prints or exits.

# The Pythons constraints.txt and requirements-sam.txt are proven to resolve on
# (tests/integration/test_locks.py dry-runs each lock on each of these; it also checks this list
# against pyproject's requires-python).
RG_PYTHONS="3.11 3.12 3.13"

# rg_python: print the interpreter the venvs are made with, or explain and exit 1.
#   1. pyenv's 3.13 when pyenv is on PATH: the Lambda runtime's version (root on this kind of machine);
#   2. otherwise the first of python3, python3.13, python3.12, python3.11 on PATH whose version is one
#      of RG_PYTHONS. Through sudo, whose secure_path hides pyenv, that is Debian's python3 (3.11).
rg_python() {
  local candidate v
  if command -v pyenv >/dev/null 2>&1; then
    v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.13(\.[0-9]+)?$' | tail -1 || true)
    if [ -n "$v" ] && [ -x "$(pyenv root)/versions/$v/bin/python" ]; then
      echo "$(pyenv root)/versions/$v/bin/python"
      return 0
    fi
  fi
  for candidate in python3 python3.13 python3.12 python3.11; do
    # `command -v` is not enough: a pyenv shim for an inactive version exists but fails when run.
    v=$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
    case " $RG_PYTHONS " in
      *" $v "*) command -v "$candidate"; return 0 ;;
    esac
  done
  echo "no supported Python on PATH (need one of: $RG_PYTHONS; python3 is $(python3 --version 2>&1))" >&2
  exit 1
}

# rg_lambda_python: print a python3.13 (the template's Lambda runtime) to precompile the layers' bytecode
# with, or nothing. pyenv's even where sudo's secure_path hides pyenv (its root is then $PYENV_ROOT or
# ~/.pyenv), else python3.13 on PATH. The build targets python3.13/arm64 either way; without one the
# layers ship without .pyc files and every cold start compiles (layers/deps/Makefile warns).
rg_lambda_python() {
  local root candidate
  root=${PYENV_ROOT:-$HOME/.pyenv}
  if command -v pyenv >/dev/null 2>&1; then root=$(pyenv root); fi
  for candidate in "$root"/versions/3.13.*/bin/python3.13 "$(command -v python3.13 2>/dev/null || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c '' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
}

# rg_as_root SCRIPT ARGS...: return if root; otherwise re-run SCRIPT through sudo, saying so; with no
# sudo, say what to do and exit 1. sudo resets PATH to its secure_path, so the re-run uses the
# system Python (see rg_python).
rg_as_root() {
  local script=$1
  shift
  [ "$(id -u)" -eq 0 ] && return 0
  local why="$script needs root (the lab puts each simulated server in its own namespaces)"
  local sudo_path
  if sudo_path=$(command -v sudo) && [ -x "$sudo_path" ]; then
    echo "$why; re-running: sudo $script${*:+ $*}" >&2
    exec sudo -- "$script" "$@"
  fi
  echo "$why, and sudo is not installed." >&2
  echo "run it as root:  su -c '$script${*:+ $*}'   (or, as root, apt-get install sudo)" >&2
  exit 1
}
