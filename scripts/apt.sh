# Sourced by deps.sh and cross.sh: `apt-get update` that survives a mirror caught mid-sync.
# A Debian mirror being synced serves a Release file whose index sizes do not match yet
# ("File has unexpected size ... Mirror sync in progress?"): apt-get update then fails for
# that one index. Tried again after a pause (5 tries, 15 s apart); if it still fails, the
# lists it did fetch are kept and the install that follows says what is missing.
nodemedic_apt_update() {
  local try
  for try in 1 2 3 4 5; do
    if apt-get update -qq -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 "$@"; then
      return 0
    fi
    [ "$try" = 5 ] && break
    echo "apt-get update failed (try $try of 5; a mirror may be mid-sync): again in 15 s" >&2
    sleep 15
  done
  echo "warning: apt-get update still fails after 5 tries; going on with the lists it has" >&2
  return 0
}
