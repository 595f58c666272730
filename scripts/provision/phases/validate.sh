# shellcheck shell=bash
# validate: fails an image build, naming each finding, when per-instance state remains: authorized
# keys, known hosts, SSH host keys, passwords or password hashes, shell history, a machine-id, DHCP
# leases, logs, cloud-init state, secrets (the credentials file, Redis password lines), a Sentinel
# identity, or an SSH server that accepts passwords or root with one.
# --root DIR validates a mounted image instead of this system; --live validates this running system
# right after cleanup, where services still running may have logged since (check_live_logs).

FINDINGS=()
finding() { FINDINGS+=("$*"); }

# The lines sshd reads, in order, Include files expanded where they appear. A Match block only
# applies to some connections: its lines are skipped (this checks what applies to everyone).
sshd_lines() {
  local file=$1 keyword rest pattern included
  [ -f "$file" ] || return 0
  while read -r keyword rest || [ -n "$keyword" ]; do
    case "${keyword,,}" in
      '' | '#'*) continue ;;
      match) return 0 ;;
      include)
        for pattern in $rest; do
          [[ "$pattern" = /* ]] || pattern="/etc/ssh/$pattern"
          while IFS= read -r included; do
            sshd_lines "$included"
          done < <(compgen -G "$TARGET_ROOT$pattern" | sort)
        done
        ;;
      *) printf '%s %s\n' "${keyword,,}" "$rest" ;;
    esac
  done <"$file"
}

# sshd_setting KEYWORD DEFAULT: the first value sshd reads for KEYWORD, lower-cased.
sshd_setting() {
  local value
  value=$(sshd_lines "$TARGET_ROOT/etc/ssh/sshd_config" | awk -v k="$1" '$1 == k { print tolower($2); exit }')
  printf '%s\n' "${value:-$2}"
}

check_ssh() {
  local R=$TARGET_ROOT file
  while IFS= read -r file; do
    finding "authorized_keys file left: ${file#"$R"}"
  done < <(find "$R/root" "$R/home" "$R/etc/ssh" -name 'authorized_keys*' -type f 2>/dev/null)
  for file in "$R"/etc/ssh/ssh_host_*; do
    [ -e "$file" ] && finding "SSH host key left: ${file#"$R"}"
  done
  while IFS= read -r file; do
    finding "known_hosts file left: ${file#"$R"}"
  done < <(find "$R/root" "$R/home" -path '*/.ssh/known_hosts*' -type f 2>/dev/null; [ ! -f "$R/etc/ssh/ssh_known_hosts" ] || echo "$R/etc/ssh/ssh_known_hosts")
  [ -f "$R/etc/ssh/sshd_config" ] || return 0
  local password kbd root
  password=$(sshd_setting passwordauthentication yes)
  kbd=$(sshd_setting kbdinteractiveauthentication "$(sshd_setting challengeresponseauthentication yes)")
  root=$(sshd_setting permitrootlogin prohibit-password)
  [ "$password" = no ] || finding "SSH accepts passwords: PasswordAuthentication is $password (set it to no)"
  if [ "$kbd" != no ] && [ "$(sshd_setting usepam no)" = yes ]; then
    finding "SSH accepts passwords through PAM: KbdInteractiveAuthentication is $kbd (set it to no)"
  fi
  # Root logs in with nothing: the admin user and sudo leave a trail root's own login does not.
  [ "$root" = no ] || finding "SSH lets root log in: PermitRootLogin is $root (set it to no)"
  return 0
}

check_passwords() {
  local R=$TARGET_ROOT file account hash
  for file in "$R/etc/shadow" "$R/etc/shadow-"; do
    [ -f "$file" ] || continue
    while IFS=: read -r account hash _; do
      case "$hash" in
        '*' | '!' | '!*' | '!!') ;;
        '') finding "account $account has an empty password in ${file#"$R"} (anyone could log in)" ;;
        *) finding "account $account has a password or password hash in ${file#"$R"}" ;;
      esac
    done <"$file"
  done
}

check_identity() {
  local R=$TARGET_ROOT file
  if [ -s "$R/etc/machine-id" ] && [ "$(cat "$R/etc/machine-id")" != uninitialized ]; then
    finding "machine-id left: /etc/machine-id is set (empty it so each machine gets its own)"
  fi
  if [ -s "$R/var/lib/dbus/machine-id" ] && [ ! -L "$R/var/lib/dbus/machine-id" ]; then
    finding "machine-id left: /var/lib/dbus/machine-id"
  fi
  while IFS= read -r file; do
    finding "shell history left: ${file#"$R"}"
  done < <(find "$R/root" "$R/home" -maxdepth 2 -name '.*_history' -type f 2>/dev/null)
  if [ -d "$R/var/lib/cloud" ] && [ -n "$(ls -A "$R/var/lib/cloud")" ]; then
    finding "cloud-init state left: /var/lib/cloud (run cloud-init clean)"
  fi
  for file in "$R"/var/lib/dhcp/*.leases "$R"/var/lib/dhcp/*.lease "$R"/var/lib/dhclient/*.lease*; do
    [ -f "$file" ] && finding "DHCP lease left: ${file#"$R"}"
  done
  return 0
}

check_logs() {
  local R=$TARGET_ROOT file
  if [ "$LIVE" -eq 1 ]; then
    check_live_logs
    return
  fi
  while IFS= read -r file; do
    finding "log left: ${file#"$R"}"
  done < <(find "$R/var/log" -type f -size +0 2>/dev/null | sort)
}

# --live: cleanup emptied every log in this boot; a non-empty log changed since then was written by
# a service still running (the SSM agent that runs this build) and is named, not counted. One that
# did not change since cleanup is a finding: cleanup missed it.
check_live_logs() {
  local file
  if [ ! -f "$LIVE_CLEANUP_MARK" ] || [ "$(cat "$LIVE_CLEANUP_MARK")" != "$(cat /proc/sys/kernel/random/boot_id)" ]; then
    finding "cleanup has not run in this boot: validate --live checks a system right after cleanup (run cleanup first)"
    while IFS= read -r file; do finding "log left: $file"; done < <(find /var/log -type f -size +0 2>/dev/null | sort)
    return
  fi
  while IFS= read -r file; do
    if [ "$file" -nt "$LIVE_CLEANUP_MARK" ]; then
      log "ignored with --live: $file (written after cleanup by a running service)"
    else
      finding "log left: $file"
    fi
  done < <(find /var/log -type f -size +0 2>/dev/null | sort)
}

check_secrets() {
  local R=$TARGET_ROOT file
  for file in "$R$SECRETS_TARGET"/* "$R$ETC_DIR"/tls/* "$R$CLUSTER_TLS_DIR"/* "$R$REDIS_TLS_DIR"/* "$R"/var/tmp/fleetmq-stage/secrets/*; do
    [ -e "$file" ] && finding "secret left: ${file#"$R"}"
  done
  [ -e "$R$CREDENTIALS_FILE" ] && finding "credentials left: $CREDENTIALS_FILE (first boot writes each instance's own)"
  for file in "$R"/root/.fleetmq-credentials.*; do
    [ -e "$file" ] && finding "credentials left: ${file#"$R"}"
  done
  local line
  for file in "$R"/etc/redis/*.conf; do
    [ -f "$file" ] || continue
    while IFS= read -r line; do
      finding "Redis password left: '$line' in ${file#"$R"}"
    done < <(grep -E "$REDIS_SECRET_LINES" "$file" | awk '{ if ($1 == "sentinel") print $1, $2; else print $1 }')
  done
  if [ -f "$R/etc/redis/sentinel.conf" ] && grep -q '^sentinel myid ' "$R/etc/redis/sentinel.conf"; then
    finding "Sentinel identity left: 'sentinel myid' in /etc/redis/sentinel.conf (clones would share it)"
  fi
  return 0
}

phase_validate() {
  step "checking ${TARGET_ROOT:-this system} for per-instance state"
  check_ssh
  check_passwords
  check_identity
  check_logs
  check_secrets
  if [ "${#FINDINGS[@]}" -gt 0 ]; then
    local item
    for item in "${FINDINGS[@]}"; do printf '[fleetmq-provision validate] finding: %s\n' "$item" >&2; done
    die "${#FINDINGS[@]} finding(s): this is not a clean image; run the cleanup phase"
  fi
  log "clean: no keys, passwords, history, identity, logs or secrets left"
}
