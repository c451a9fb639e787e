#!/bin/sh
# Anchor: the OpenSSH client, one process per host, CONCURRENCY at a time (xargs -P), strict host keys.
#   openssh_xargs.sh HOSTS KEY KNOWN_HOSTS SCRIPT CONCURRENCY
# The script goes on stdin to `sh -s`, as RelayGuard sends it. Prints address<TAB>rc<TAB>complete.
set -eu
export RG_KEY="$2" RG_KH="$3" RG_SCRIPT="$4"
xargs -P "$5" -n 1 sh -c '
  out=$(ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$RG_KH" \
            -o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o IdentityAgent=none -i "$RG_KEY" \
            -l root "$0" sh -s < "$RG_SCRIPT"); rc=$?
  case "$out" in *"
scan.end=1"*) ok=1 ;; *) ok=0 ;; esac
  printf "%s\t%s\t%s\n" "$0" "$rc" "$ok"' < "$1"
