#!/bin/sh
# Configures a poolgate VM: what may change from one deployment to the
# next, and the secrets. azuredeploy.json fills in the placeholders (in
# double underscores) and hands the script to the VM's CustomScript
# extension in its protected settings (encrypted, kept out of the
# deployment history and of customData), with a forceUpdateTag that
# changes at every deployment, so it runs again each time:
#   - a new poolgateUrl installs that binary;
#   - highAvailability, scaleFromZero, plainRdp or a rotated storage or
#     Redis key rewrite the config, the credentials and the mount;
#   - poolgate restarts only when something it reads changed (a restart
#     tells users and waits for their sessions: shutdown_timeout).
# The VM's customData (gateway-cloud-init.yaml) never changes, as Azure
# requires of a VM; it installs cifs-utils, creates the poolgate user and
# the unit. deploy_test.go runs this script against a scratch directory
# (POOLGATE_CONFIGURE_ROOT) with stand-ins for mount, curl and systemctl.
set -eu

root=${POOLGATE_CONFIGURE_ROOT:-}
keys=/data/poolgate-keys
say() { echo "poolgate-configure: $*" >&2; }

# The packages and the poolgate user come from cloud-init, which may still
# be running when the extension starts.
cloud-init status --wait >/dev/null 2>&1 || true
if ! command -v mount.cifs >/dev/null 2>&1; then
	say "mount.cifs is missing (cloud-init installs cifs-utils: see /var/log/cloud-init-output.log)"
	exit 1
fi
gid=$(getent group poolgate | cut -d: -f3)
if [ -z "$gid" ]; then
	say "the poolgate group does not exist (cloud-init creates the user: see /var/log/cloud-init.log)"
	exit 1
fi

umask 077
install -d -m 0755 "$root/etc/poolgate" "$root/usr/local/bin"
install -d -m 0700 "$root/etc/smbcredentials"
# Not install -d on the mount point: once mounted, its mode is the mount's.
mkdir -p "$root$keys"

# put FILE MODE: write stdin to FILE; true when FILE changed. An
# unchanged FILE still gets MODE (an earlier version or a hand edit may
# have left it readable by all).
put() {
	cat >"$1.new"
	chmod "$2" "$1.new"
	if [ -f "$1" ] && cmp -s "$1.new" "$1"; then
		rm -f "$1.new"
		chmod "$2" "$1"
		return 1
	fi
	mv "$1.new" "$1"
}

restart=
mount_changed=

# With caKeyVault, the user CA key is in Azure Key Vault (poolgate asks
# it to sign, as this VM's managed identity); empty: a file in state_dir.
kv_url='__KEY_VAULT_URL__'
kv_key='__KEY_VAULT_KEY__'
kv_version='__KEY_VAULT_KEY_VERSION__'
kv_previous='__KEY_VAULT_PREVIOUS_VERSION__'
# Linux or Windows: Windows nodes take RDP through the gateway.
nodes_os='__NODE_OS__'
# Windows pools: the RD Gateway on 443 (rdp.gateway), which .rdp files
# name by the public address's FQDN; and, with plainRdp, plain RDP on
# 3389 (rdp.listen), which routes by the name the client types and
# proves no user.
rdg_address='__RDG_ADDRESS__'
plain_rdp='__PLAIN_RDP__'
if [ "$nodes_os" = Windows ]; then
	# An FQDN Azure makes from a label: letters, digits, dots and
	# hyphens only, so nothing in it can reach the YAML or the shell.
	case $rdg_address in
	'' | *[!A-Za-z0-9.-]*)
		say "the public address's FQDN \"$rdg_address\" is not a host name (letters, digits, dots and hyphens; a template bug); nothing was changed"
		exit 1
		;;
	esac
fi
case $plain_rdp in
true | false) ;;
*)
	say "plainRdp \"$plain_rdp\" is neither true nor false (a template bug); nothing was changed"
	exit 1
	;;
esac

# Sign-in with Microsoft Entra ID (identity.oidc), when entraTenantId is
# given. The template passes these values base64-encoded, so that no
# quote or newline in a parameter can reach the shell; they are checked
# here, before anything is written. IDs are lower-cased: Entra's issuer,
# audience and groups claims are.
unb64() {
	printf '%s' "$1" | base64 -d || { say "a sign-in value from the template is not base64 (a template bug)"; exit 1; }
}
lower() { printf '%s' "$1" | tr 'A-F' 'a-f'; }
entra_tenant=$(unb64 '__ENTRA_TENANT_ID__')
entra_client=$(unb64 '__ENTRA_CLIENT_ID__')
entra_allowed=$(unb64 '__ENTRA_ALLOWED_GROUPS__')
entra_ops=$(unb64 '__ENTRA_OPS_GROUPS__')
identity_ttl=$(unb64 '__IDENTITY_KEY_TTL__')

# is_guid VALUE: true when VALUE is one GUID (8-4-4-4-12 hex digits).
is_guid() {
	case $1 in *[!0-9a-fA-F-]* | '') return 1 ;; esac
	printf '%s\n' "$1" | grep -Eqx '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}'
}

# yaml_ids PARAMETER LIST: LIST (object IDs separated by commas) as a
# YAML flow list of quoted strings; refuses an ID that is not a GUID.
yaml_ids() {
	out=
	case ",$2," in
	,,) ;;
	*,,*)
		say "$1: an empty object ID in the list; nothing was changed"
		exit 1
		;;
	esac
	set -f
	IFS=,
	for id in $2; do
		if ! is_guid "$id"; then
			say "$1: \"$id\" is not a group's object ID (a GUID: hex digits and hyphens only); nothing was changed"
			exit 1
		fi
		out="$out${out:+, }\"$id\""
	done
	printf '[%s]' "$out"
}

if [ -n "$entra_tenant" ]; then
	if ! is_guid "$entra_tenant"; then
		say "entraTenantId \"$entra_tenant\" is not a tenant ID (a GUID: az account show --query tenantId); nothing was changed"
		exit 1
	fi
	if ! is_guid "$entra_client"; then
		say "entraClientId \"$entra_client\" is not an application (client) ID (a GUID: az ad app list --display-name NAME --query [].appId), which entraTenantId needs; nothing was changed"
		exit 1
	fi
	case $identity_ttl in
	'' | [!0-9]* | *[!0-9a-z.]*)
		say "identityKeyTtl \"$identity_ttl\" is not a duration such as 12h or 90m; nothing was changed"
		exit 1
		;;
	esac
	# Each in a subshell, whose exit ends this script (set -e).
	allowed_groups=$(yaml_ids entraAllowedGroups "$entra_allowed")
	ops_groups=$(yaml_ids entraOpsGroups "$entra_ops")
	entra_tenant=$(lower "$entra_tenant")
	entra_client=$(lower "$entra_client")
	allowed_groups=$(lower "$allowed_groups")
	ops_groups=$(lower "$ops_groups")
elif [ -n "$entra_client$entra_allowed$entra_ops" ]; then
	say "entraClientId, entraAllowedGroups and entraOpsGroups take effect only with entraTenantId, which is empty; nothing was changed"
	exit 1
fi

# Session recordings (sessionRecording): the blob endpoint of the
# recordings' storage account, without its trailing slash, and the
# container; empty: no recording. poolgate writes there as this VM's
# managed identity (Storage Blob Data Contributor on the container).
# The URL is Azure's https://ACCOUNT.blob.SUFFIX (core.windows.net in
# Azure's public cloud): only lower-case letters, digits, dots and
# hyphens after https://, so nothing in it can reach the YAML or the
# shell.
rec_url='__RECORDING_ACCOUNT_URL__'
rec_container='__RECORDING_CONTAINER__'
if [ -n "$rec_url$rec_container" ]; then
	rec_host=${rec_url#https://}
	rec_account=${rec_host%%.blob.*}
	rec_suffix=${rec_host#*.blob.}
	case $rec_url in
	https://*.blob.?*) rec_ok=1 ;;
	*) rec_ok= ;;
	esac
	case $rec_host in '' | *[!a-z0-9.-]*) rec_ok= ;; esac
	case $rec_account in '' | *[!a-z0-9]*) rec_ok= ;; esac
	case $rec_suffix in '' | .* | *. | *..*) rec_ok= ;; esac
	if [ -z "$rec_ok" ]; then
		say "the recordings' account URL \"$rec_url\" is not a blob endpoint such as https://ACCOUNT.blob.core.windows.net (a template bug); nothing was changed"
		exit 1
	fi
	# A container name: 3-63 lower-case letters, digits and single
	# hyphens (the template's constant).
	case $rec_container in
	[a-z0-9]?*[a-z0-9])
		case $rec_container in *[!a-z0-9-]* | *--*) rec_container= ;; esac
		;;
	*) rec_container= ;;
	esac
	if [ -z "$rec_container" ]; then
		say "the recordings' container name from the template is not a container name (a template bug); nothing was changed"
		exit 1
	fi
fi

if put "$root/etc/smbcredentials/__KEYS_ACCOUNT__.cred" 0600 <<'POOLGATE_EOF'
username=__KEYS_ACCOUNT__
password=__KEYS_STORAGE_KEY__
POOLGATE_EOF
then mount_changed=1; fi
# The keys share is in a storage account of its own, whose key no node
# holds (a storage key opens every share of its account). A gateway
# deployed before that kept the users' account key here: drop it.
for f in "$root/etc/smbcredentials/"*.cred; do
	[ "$f" = "$root/etc/smbcredentials/__KEYS_ACCOUNT__.cred" ] || rm -f "$f"
done

# The users' keys share: root writes keys here (sudo tee
# /data/poolgate-keys/USER), poolgate reads them. A numeric gid, so the
# line means the same at every boot whatever the order of NSS and mounts.
opts="vers=3.1.1,credentials=/etc/smbcredentials/__KEYS_ACCOUNT__.cred,serverino,uid=0,gid=$gid,dir_mode=0750,file_mode=0640,nosuid,nodev,noexec,_netdev,nofail"
line="//__KEYS_ACCOUNT__.file.core.windows.net/__KEYS_SHARE__ $keys cifs $opts 0 0"
touch "$root/etc/fstab"
if { grep -v " $keys " "$root/etc/fstab" || true; echo "$line"; } | put "$root/etc/fstab" 0644; then
	mount_changed=1
	systemctl daemon-reload
fi

config() {
	cat <<'POOLGATE_EOF'
# Written by poolgate-configure (azuredeploy.json) at each deployment;
# changes made here are lost at the next one. Every key: docs/CONFIG.md.
state_dir: /var/lib/poolgate
ssh:
  listen: 0.0.0.0:22
  # Users' public keys, one file each, on the keys share (only the
  # gateways mount it; root writes, poolgate reads).
  authorized_keys: /data/poolgate-keys/{user}
  # Nodes from the template take keys only (Azure turns sshd password
  # login off); set true where nodes verify passwords (PAM, AAD).
  password_passthrough: false
http:
  listen: 0.0.0.0:443
  tls: true
  upstream_tls: true
  # DSVM hubs serve a self-signed certificate per VM: pin each on
  # first contact.
  upstream_insecure_skip_verify: false
admin:
  listen: 127.0.0.1:9090
balancer:
  affinity_grace: 30m
discovery:
  azure:
    subscription_id: __SUBSCRIPTION_ID__
    resource_group: __RESOURCE_GROUP__
    scale_set: __SCALE_SET__
    credential: managed_identity
    protect_busy_nodes: true
    scale_from_zero: __SCALE_FROM_ZERO__
    min_capacity: 1
# Each node's node_exporter (and dcgm-exporter, when the nodes run it),
# for placement by load; the nodes' NSG lets only the gateways reach them.
load:
  metrics_port: __METRICS_PORT__
  gpu_metrics_port: __GPU_METRICS_PORT__
# With highAvailability, the gateways share routing state in Azure
# Cache for Redis (its key URL-encoded); empty keeps it in this
# gateway's memory.
state:
  redis: "__STATE_REDIS__"
POOLGATE_EOF
	if [ -n "$kv_url" ]; then
		cat <<POOLGATE_EOF
# The user CA's key is in Azure Key Vault: poolgate signs through it with
# this VM's managed identity (role Key Vault Crypto User on the key).
ca:
  key_vault:
    url: "$kv_url"
    key: "$kv_key"
POOLGATE_EOF
		[ -z "$kv_version" ] || printf '    version: "%s"\n' "$kv_version"
		[ -z "$kv_previous" ] || printf '    previous: "%s"\n' "$kv_previous"
	fi
	if [ -n "$entra_tenant" ]; then
		cat <<POOLGATE_EOF
# Sign-in with Microsoft Entra ID (entraTenantId): the device flow in
# ssh and the browser sign-in, with the app registration entraClientId,
# a public client (no client_secret_file). Empty allowed_groups lets
# every user of the tenant in; ops_groups may use the dashboard and the
# admin API through the browser sign-in.
identity:
  oidc:
    issuer: "https://login.microsoftonline.com/$entra_tenant/v2.0"
    client_id: "$entra_client"
    username_claim: preferred_username
  key_ttl: "$identity_ttl"
  allowed_groups: $allowed_groups
  ops_groups: $ops_groups
POOLGATE_EOF
	fi
	if [ -n "$rec_url" ]; then
		cat <<POOLGATE_EOF
# Session recordings (sessionRecording): each SSH session with a
# terminal, as asciicast, in Azure Blob Storage, written as this VM's
# managed identity (Storage Blob Data Contributor on the container).
# Retention: the account's lifecycle rule (recordingRetentionDays) and,
# with recordingImmutableDays, the container's WORM policy.
recording:
  enabled: true
  azure_blob:
    account_url: "$rec_url"
    container: "$rec_container"
POOLGATE_EOF
	fi
	if [ "$nodes_os" = Windows ]; then
		cat <<POOLGATE_EOF
# Windows nodes: users' Remote Desktop, to the node that holds their
# desktop. The RD Gateway on 443: users open an .rdp file (from the
# users' page, or poolgate rdp-file USER) that names this address and
# carries a token poolgate signed for them.
rdp:
  gateway:
    enabled: true
    address: "$rdg_address"
POOLGATE_EOF
		if [ "$plain_rdp" = true ]; then
			cat <<'POOLGATE_EOF'
  # plainRdp: plain RDP on 3389 too. It routes by the name the client
  # types and proves no user (the RD Gateway does).
  listen: 0.0.0.0:3389
POOLGATE_EOF
		fi
	fi
}

# 0640 root:poolgate: with highAvailability it holds the Redis key.
if config | put "$root/etc/poolgate/poolgate.yaml" 0640; then restart=1; fi
chgrp "$gid" "$root/etc/poolgate/poolgate.yaml"

# The binary's URL (with its SAS token) stays root-only on the VM.
if put "$root/etc/poolgate/binary-url" 0600 <<'POOLGATE_EOF' || [ ! -x "$root/usr/local/bin/poolgate" ]
__POOLGATE_URL__
POOLGATE_EOF
then
	if ! curl -fsSL --retry 5 -o "$root/usr/local/bin/poolgate.new" "$(cat "$root/etc/poolgate/binary-url")"; then
		rm -f "$root/etc/poolgate/binary-url"
		say "could not download poolgate from poolgateUrl (expired SAS token?)"
		exit 1
	fi
	chmod 0755 "$root/usr/local/bin/poolgate.new"
	mv "$root/usr/local/bin/poolgate.new" "$root/usr/local/bin/poolgate"
	restart=1
fi

if [ -n "$mount_changed" ] || ! mountpoint -q "$root$keys"; then
	if mountpoint -q "$root$keys"; then
		systemctl stop poolgate
		umount "$root$keys"
	fi
	if ! mount "$root$keys" || ! mountpoint -q "$root$keys"; then
		say "the keys share //__KEYS_ACCOUNT__.file.core.windows.net/__KEYS_SHARE__ did not mount on $keys; without it nobody can log in (outbound TCP 445 blocked? see dmesg)"
		exit 1
	fi
	restart=1
fi

if [ -n "$restart" ]; then
	systemctl daemon-reload
	systemctl enable poolgate
	systemctl restart poolgate
else
	systemctl start poolgate
fi
# A config poolgate refuses makes it exit within a second or two, and
# systemd restarts it every 5 s: look again after a moment.
sleep "${POOLGATE_CONFIGURE_SETTLE:-8}"
if ! systemctl is-active --quiet poolgate; then
	say "poolgate did not start or does not stay up: journalctl -u poolgate"
	exit 1
fi
say "done"
