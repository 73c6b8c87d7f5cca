# Configures a Windows DSVM node of the pool (osType Windows): its OpenSSH
# Server trusts poolgate's user CA, so the gateway logs users in with
# short-lived certificates, as on Linux nodes (TrustedUserCAKeys works the
# same in Windows OpenSSH). Users' RDP reaches the node through the
# gateway; Azure's Windows images accept RDP with NLA already.
# azuredeploy.json fills in the placeholders (in double underscores) and
# hands the script to the scale set's CustomScriptExtension, base64 in
# the commandToExecute of its protected settings. No test here can run it
# (no Windows, no PowerShell): deploy/README.md says what to check on a
# node.
$ErrorActionPreference = 'Stop'
function Say($msg) { Write-Output "poolgate-configure: $msg" }

# OpenSSH Server is a Windows capability (Windows Server 2019 and later).
$cap = Get-WindowsCapability -Online -Name 'OpenSSH.Server*' | Select-Object -First 1
if ($null -eq $cap) { Say 'no OpenSSH.Server capability on this image'; exit 1 }
if ($cap.State -ne 'Installed') { Add-WindowsCapability -Online -Name $cap.Name | Out-Null }
Set-Service -Name sshd -StartupType Automatic
# Its first start writes C:\ProgramData\ssh\sshd_config and the host keys.
Start-Service sshd

# UTF-8 without a byte-order mark: sshd reads these as plain text lines.
$utf8 = New-Object System.Text.UTF8Encoding $false
$dir = Join-Path $env:ProgramData 'ssh'
# The CA lines: the current one and, during a rotation, the previous one
# (an empty line is skipped). The file inherits C:\ProgramData\ssh's ACL
# (SYSTEM and Administrators write, others read).
[IO.File]::WriteAllText((Join-Path $dir 'poolgate_user_ca.pub'), "__GATEWAY_CA__`n__GATEWAY_PREVIOUS_CA__`n", $utf8)

$conf = Join-Path $dir 'sshd_config'
$line = 'TrustedUserCAKeys C:/ProgramData/ssh/poolgate_user_ca.pub'
$text = [IO.File]::ReadAllText($conf)
if (-not $text.Contains($line)) {
	# At the top: sshd takes a keyword's first value, and the default
	# file ends in "Match Group administrators", to which a line added
	# at the end would belong.
	[IO.File]::WriteAllText($conf, "# poolgate: users log in with certificates of the gateway's user CA.`r`n$line`r`n`r`n" + $text, $utf8)
}
Restart-Service sshd
Say 'done'
