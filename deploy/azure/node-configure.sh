#!/bin/sh
# Configures a DSVM node of the pool with its secrets: the storage key
# for the users' share and the JupyterHub cookie secret. azuredeploy.json
# fills in the placeholders (in double underscores) and hands the script
# to the scale set's CustomScript extension in its protected settings
# (encrypted, out of customData and of the deployment history). It runs on
# every new instance, and on existing ones when they are brought to the
# scale set's latest model (az vmss update-instances). deploy_test.go runs
# it against a scratch directory (POOLGATE_CONFIGURE_ROOT) with stand-ins
# for mount and systemctl.
#
# The users' share (/data/share) is one team share, as in the original
# DSVM cluster template: Azure Files over SMB with the storage key has no
# per-user identity, so every pool user may read and write all of it
# (dir_mode 0777, file_mode 0666; chmod and chown are refused there).
# Each user's folder notebooks/USER is made at their first login
# (/etc/profile.d/poolgate-share-links.sh). The users' SSH keys are not on
# it: they are on a share that only the gateways mount.
set -eu
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a

root=${POOLGATE_CONFIGURE_ROOT:-}
share=/data/share
say() { echo "poolgate-configure: $*" >&2; }

# cifs-utils comes from cloud-init, which may still be running.
cloud-init status --wait >/dev/null 2>&1 || true
if ! command -v mount.cifs >/dev/null 2>&1; then
	say "mount.cifs is missing (cloud-init installs cifs-utils: see /var/log/cloud-init-output.log)"
	exit 1
fi

umask 077
install -d -m 0700 "$root/etc/smbcredentials"
install -d -m 0755 "$root/etc/jupyterhub"
# Not install -d on the share: once mounted, modes are the mount's.
mkdir -p "$root$share"

# put FILE MODE: write stdin to FILE; true when FILE changed.
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

mount_changed=
if put "$root/etc/smbcredentials/__STORAGE_ACCOUNT__.cred" 0600 <<'POOLGATE_EOF'
username=__STORAGE_ACCOUNT__
password=__STORAGE_KEY__
POOLGATE_EOF
then mount_changed=1; fi

opts="vers=3.1.1,credentials=/etc/smbcredentials/__STORAGE_ACCOUNT__.cred,serverino,uid=0,gid=0,dir_mode=0777,file_mode=0666,nosuid,nodev,_netdev,nofail"
line="//__STORAGE_ACCOUNT__.file.core.windows.net/__SHARE__ $share cifs $opts 0 0"
touch "$root/etc/fstab"
if { grep -v " $share " "$root/etc/fstab" || true; echo "$line"; } | put "$root/etc/fstab" 0644; then
	mount_changed=1
	systemctl daemon-reload
fi
if [ -n "$mount_changed" ] || ! mountpoint -q "$root$share"; then
	if mountpoint -q "$root$share"; then
		umount -l "$root$share"
	fi
	if ! mount "$root$share" || ! mountpoint -q "$root$share"; then
		say "the share //__STORAGE_ACCOUNT__.file.core.windows.net/__SHARE__ did not mount on $share (outbound TCP 445 blocked? see dmesg)"
		exit 1
	fi
fi
mkdir -p "$root$share/notebooks"

# With sign-in with Entra ID (entraTenantId), the gateway logs a user in
# to the nodes as the user part of their preferred_username (alice for
# alice@contoso.com). A node that knows the users through SSSD (joined to
# Entra Domain Services) must know them by that short name: when this
# node has an sssd.conf, every [domain/...] section gets
# use_fully_qualified_names = False (deploy/README.md).
if [ '__ENTRA_SHORT_NAMES__' = true ] && [ -f "$root/etc/sssd/sssd.conf" ]; then
	if awk '
		/^[ \t]*\[/ {
			domain = $0 ~ /^[ \t]*\[domain\//
			print
			if (domain) print "use_fully_qualified_names = False"
			next
		}
		domain && /^[ \t]*use_fully_qualified_names[ \t]*=/ { next }
		{ print }
	' "$root/etc/sssd/sssd.conf" | put "$root/etc/sssd/sssd.conf" 0600; then
		# Names cached in the long form would linger.
		if command -v sss_cache >/dev/null 2>&1; then sss_cache -E || true; fi
		systemctl try-restart sssd
		say "sssd: use_fully_qualified_names = False in every domain (users are alice, not alice@domain)"
	fi
fi

# Prometheus node_exporter, which poolgate scrapes for this node's CPU and
# memory (load.metrics_port). It listens on the node's private address
# only, never on 0.0.0.0, and the nodes' NSG lets only the gateway subnet
# reach it. The address is looked up at each start (an instance that was
# deallocated may come back with another one): the source address of the
# route to the gateways' subnet. The wrapper and the drop-in come before
# the package, so that its first start (by the package) binds there too.
exporter_changed=
install -d -m 0755 "$root/usr/local/sbin" "$root/etc/systemd/system/prometheus-node-exporter.service.d"
if put "$root/usr/local/sbin/poolgate-node-exporter" 0755 <<'POOLGATE_EOF'
#!/bin/sh
# Written by poolgate-configure: node_exporter on this node's private
# address, port __METRICS_PORT__. ARGS (more flags) comes from
# /etc/default/prometheus-node-exporter, the unit's EnvironmentFile.
set -eu
addr=$(ip -4 -o route get __GATEWAY_SUBNET_ADDRESS__ | sed -n 's/.* src \([0-9.]*\).*/\1/p')
if [ -z "$addr" ]; then
	echo "poolgate-node-exporter: no address on the route to the gateways (__GATEWAY_SUBNET_ADDRESS__); not listening" >&2
	exit 1
fi
exec /usr/bin/prometheus-node-exporter --web.listen-address="$addr:__METRICS_PORT__" ${ARGS:-}
POOLGATE_EOF
then exporter_changed=1; fi
if put "$root/etc/systemd/system/prometheus-node-exporter.service.d/10-poolgate.conf" 0644 <<'POOLGATE_EOF'
# Written by poolgate-configure: listen on the private address only.
[Unit]
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=
ExecStart=/usr/local/sbin/poolgate-node-exporter
RestartSec=5s
POOLGATE_EOF
then exporter_changed=1; fi
if [ -n "$exporter_changed" ]; then
	systemctl daemon-reload
fi
if [ ! -x "$root/usr/bin/prometheus-node-exporter" ]; then
	if ! apt-get install -y -q prometheus-node-exporter >/dev/null && ! { apt-get update -q >/dev/null && apt-get install -y -q prometheus-node-exporter >/dev/null; }; then
		say "could not install prometheus-node-exporter; poolgate places users on this node by its sessions alone"
	fi
	exporter_changed=1
fi
if [ -x "$root/usr/bin/prometheus-node-exporter" ]; then
	systemctl enable prometheus-node-exporter
	if [ -n "$exporter_changed" ]; then
		systemctl restart prometheus-node-exporter
	else
		systemctl start prometheus-node-exporter
	fi
fi

# JupyterHub on every node takes the same cookie secret, so a login stays
# valid if a user is ever moved to another node. The hub's unit and config
# are found rather than assumed (the DSVM image has moved them before).
hub_changed=
if put "$root/etc/jupyterhub/poolgate_cookie_secret" 0600 <<'POOLGATE_EOF'
__COOKIE_SECRET__
POOLGATE_EOF
then hub_changed=1; fi
hub=$(systemctl list-unit-files --no-legend 'jupyterhub*.service' 2>/dev/null | awk 'NR == 1 { print $1 }')
if [ -z "$hub" ]; then
	say "no JupyterHub unit on this image; browsers cannot use this node"
	exit 0
fi
conf=$(systemctl show -p ExecStart --value "$hub" 2>/dev/null | tr ' ;' '\n\n' | awk 'p { print; exit } $0 == "-f" || $0 == "--config" { p = 1 } /^--config=/ { sub(/^--config=/, ""); print; exit }')
conf=${conf:-/etc/jupyterhub/jupyterhub_config.py}
if [ ! -f "$root$conf" ]; then
	say "JupyterHub unit $hub has no config at $conf; the cookie secret is not set"
	exit 0
fi
if ! grep -q poolgate_cookie_secret "$root$conf"; then
	printf '\n# poolgate: one cookie secret for every node of the pool.\nc.JupyterHub.cookie_secret_file = "/etc/jupyterhub/poolgate_cookie_secret"\n' >>"$root$conf"
	hub_changed=1
fi
if [ -n "$hub_changed" ]; then
	systemctl try-restart "$hub"
fi
say "done ($hub, $conf)"
