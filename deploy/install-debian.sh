#!/usr/bin/env bash
# Install streamwatch as a systemd service on Debian (12 or newer). Run as root, and again at will: each step
# looks before it acts, so a rerun upgrades the package and the unit and keeps the config and the secrets.
#
#   deploy/install-debian.sh [--source PATH] [--torch-cpu] [--python PATH] [--prefix DIR] [--dry-run]
#
#   --source PATH   what pip installs: a source directory or a wheel [the checkout holding this script]
#   --torch-cpu     install torch from PyTorch's CPU-only index first: about 200 MB instead of PyPI's
#                   multi-GB CUDA build, which the daemon does not use
#   --python PATH   interpreter the venv is made from [/usr/bin/python3]; not one under /home or /root, which
#                   the unit's ProtectHome=yes hides from the service
#   --prefix DIR    lay the files out under DIR instead of / to look at them (the venv there cannot be
#                   moved); creates no user or group, hands no files to them, leaves systemctl alone
#   --dry-run       print what would be done, change nothing
#
# Steps: system user and group streamwatch (no login shell, home /var/lib/streamwatch); the venv
# /opt/streamwatch/venv with streamwatch installed by pip; /etc/streamwatch/config.yaml from
# deploy/streamwatch.yaml unless present (0640 root:streamwatch); /etc/streamwatch/credentials (0700 root)
# with one 0600 file for each LoadCredential= of the unit, written from STREAMWATCH_<NAME> when absent
# (kafka-sasl-password: STREAMWATCH_KAFKA_SASL_PASSWORD, webhook-hmac-secret: STREAMWATCH_WEBHOOK_HMAC_SECRET,
# influxdb-token: STREAMWATCH_INFLUXDB_TOKEN; values are never printed); the unit in /etc/systemd/system,
# checked by systemd-analyze verify; where systemd runs (PID 1), systemctl daemon-reload and enable --now.
# pip reads its own settings from the environment (PIP_INDEX_URL for a mirror; PIP_NO_INDEX=1 and
# PIP_FIND_LINKS=DIR for a host without internet access).
#
# Exit status: 0 installed; 1 a step failed, or a credential is missing (everything else is in place: write
# it and rerun); 2 usage.
set -euo pipefail

readonly unit_name=streamwatch.service
readonly venv_path=/opt/streamwatch/venv
readonly config_path=/etc/streamwatch/config.yaml
readonly credentials_path=/etc/streamwatch/credentials
readonly state_path=/var/lib/streamwatch
readonly torch_cpu_index=https://download.pytorch.org/whl/cpu

deploy=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source=$(dirname "$deploy")
python=/usr/bin/python3
root=""
torch_cpu=false
dry_run=false
# install(1) ownership options; a staged tree keeps the caller as owner.
config_owner=(-o root -g streamwatch)
secrets_owner=(-o root -g root)
missing_credentials=()

say() {
  if $dry_run; then
    echo "install-debian (dry run): $*"
  else
    echo "install-debian: $*"
  fi
}

fail() {
  echo "install-debian: $*" >&2
  exit 1
}

usage() {
  sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# Runs a command, or only shows it under --dry-run.
act() {
  local shown
  printf -v shown '%q ' "$@"
  say "${shown% }"
  if ! $dry_run; then
    "$@"
  fi
}

parse_args() {
  while (($#)); do
    case $1 in
      --source) source=${2:?--source needs a path}; shift ;;
      --torch-cpu) torch_cpu=true ;;
      --python) python=${2:?--python needs a path}; shift ;;
      --prefix) root=$(realpath -m "${2:?--prefix needs a directory}"); shift ;;
      --dry-run) dry_run=true ;;
      *) usage ;;
    esac
    shift
  done
  if [[ $root == / ]]; then
    root=""
  fi
  if [[ -n $root ]]; then
    config_owner=()
    secrets_owner=()
  fi
}

check_prerequisites() {
  if [[ -z $root ]] && ! $dry_run && ((EUID != 0)); then
    fail "run as root (or try it out with --prefix DIR or --dry-run)"
  fi
  command -v systemd-analyze >/dev/null || fail "systemd-analyze not found: apt-get install systemd"
  command -v "$python" >/dev/null || fail "no interpreter $python: apt-get install python3 python3-venv"
  local interpreter
  interpreter=$(readlink -f "$(command -v "$python")")
  case $interpreter in
    /home/* | /root/*)
      fail "$interpreter is under /home or /root, which ProtectHome=yes hides; use another --python"
      ;;
  esac
  [[ -e $source ]] || fail "--source $source does not exist"
}

ensure_user() {
  if [[ -n $root ]]; then
    say "staging under $root: no user or group created"
    return 0
  fi
  if getent group streamwatch >/dev/null; then
    say "group streamwatch exists"
  else
    act groupadd --system streamwatch
  fi
  if getent passwd streamwatch >/dev/null; then
    say "user streamwatch exists"
  else
    act useradd --system --gid streamwatch --home-dir "$state_path" --no-create-home \
      --shell /usr/sbin/nologin --comment "streamwatch anomaly detection" streamwatch
  fi
}

# The venv is root's: the service runs its code but cannot change it (ProtectSystem=strict too). Python runs
# isolated (-I): a PYTHONPATH of the caller's could make pip take the package for installed already.
install_package() {
  local venv="$root$venv_path"
  act install -d -m 0755 "$(dirname "$venv")"
  if [[ -x "$venv/bin/python" ]]; then
    say "venv $venv exists"
  else
    act "$python" -I -m venv "$venv"
  fi
  if $torch_cpu; then
    act "$venv/bin/python" -I -m pip install --upgrade --index-url "$torch_cpu_index" torch
  fi
  act "$venv/bin/python" -I -m pip install --upgrade "$source"
}

install_config() {
  local config="$root$config_path"
  act install -d -m 0755 "$(dirname "$config")"
  if [[ -e $config ]]; then
    say "keeping $config"
  else
    act install -m 0640 "${config_owner[@]}" "$deploy/streamwatch.yaml" "$config"
  fi
}

# Each LoadCredential=NAME:PATH of the unit: the file, from STREAMWATCH_<NAME> if it is not there yet.
install_credentials() {
  act install -d -m 0700 "${secrets_owner[@]}" "$root$credentials_path"
  local setting name path
  while IFS= read -r setting; do
    name=${setting%%:*}
    path=${setting#*:}
    write_credential "$name" "$root$path"
  done < <(sed -n 's/^LoadCredential=//p' "$deploy/$unit_name")
}

write_credential() {
  local name=$1 file=$2 variable=${1^^}
  variable="STREAMWATCH_${variable//-/_}"
  if [[ -e $file ]]; then
    say "keeping credential $name ($file)"
  elif [[ -z ${!variable:-} ]]; then
    missing_credentials+=("$name: write it to $file (mode 0600), or set $variable and rerun")
  else
    say "writing credential $name to $file from \$$variable"
    if ! $dry_run; then
      # printf is a builtin: the secret is never in a process's arguments; umask keeps it private from
      # the first byte.
      (umask 077 && printf '%s' "${!variable}" >"$file")
    fi
  fi
}

install_unit() {
  local unit="$root/etc/systemd/system/$unit_name"
  act install -d -m 0755 "$(dirname "$unit")"
  if cmp -s "$deploy/$unit_name" "$unit"; then
    say "$unit is up to date"
  else
    act install -m 0644 "$deploy/$unit_name" "$unit"
  fi
}

# systemd-analyze verify insists that ExecStart's binary exists; a staged unit is checked as a copy whose
# ExecStart names the staged binary.
verify_unit() {
  local unit="$root/etc/systemd/system/$unit_name" checked scratch="" output status=0
  if $dry_run; then
    say "would check $unit with systemd-analyze verify"
    return 0
  fi
  checked=$unit
  if [[ -n $root ]]; then
    scratch=$(mktemp -d)
    checked="$scratch/$unit_name"
    local text
    text=$(<"$unit")
    printf '%s\n' "${text//"ExecStart=$venv_path/"/"ExecStart=$root$venv_path/"}" >"$checked"
  fi
  output=$(systemd-analyze verify "$checked" 2>&1) || status=$?
  if [[ -n $scratch ]]; then
    rm -rf "$scratch"
  fi
  if ((status != 0)); then
    fail "systemd-analyze verify $unit failed: $output"
  fi
  say "systemd-analyze verify $unit: ok${output:+ ($output)}"
}

start_service() {
  local commands="systemctl daemon-reload && systemctl enable --now streamwatch"
  if [[ -n $root ]]; then
    say "staged under $root; on the host itself this step runs: $commands"
  elif [[ ! -d /run/systemd/system ]]; then
    say "systemd is not running here (not PID 1); once it is: $commands"
  else
    act systemctl daemon-reload
    act systemctl enable --now streamwatch
    say "running; after an upgrade: systemctl restart streamwatch; logs: journalctl -u streamwatch"
  fi
}

main() {
  parse_args "$@"
  check_prerequisites
  ensure_user
  install_package
  install_config
  install_credentials
  install_unit
  verify_unit
  if ((${#missing_credentials[@]})); then
    say "not started: missing credentials" >&2
    printf '  %s\n' "${missing_credentials[@]}" >&2
    exit 1
  fi
  start_service
}

main "$@"
