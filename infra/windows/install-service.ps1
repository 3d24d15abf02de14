<#
.SYNOPSIS
    Install or update Abby as a Windows service with NSSM (TSERVER).

.DESCRIPTION
    Runs "abby run" from the virtual environment, in AppDirectory (where .env lives),
    with images and the quota ledger on disk under STORAGE_ROOT and stdout/stderr
    rotated into the logs folder. Safe to run again: an existing service is stopped,
    every setting is written again, and the service is started.

    Step by step: docs\DEPLOYMENT_NSSM.md

.EXAMPLE
    # From an elevated PowerShell, in the app folder:
    .\infra\windows\install-service.ps1

.EXAMPLE
    .\infra\windows\install-service.ps1 -NssmPath C:\opt\tdos\tools\nssm\nssm.exe -NoStart
#>
#Requires -RunAsAdministrator
[CmdletBinding()]
param(
    [string] $ServiceName = 'Abby',
    [string] $DisplayName = 'Abby Discord image bot',
    [string] $AppDirectory = 'C:\opt\tdos\apps\abby\app',
    [string] $VenvPath = 'C:\opt\tdos\apps\abby\venv',
    [string] $StorageRoot = 'C:\opt\tdos\apps\abby\shared',
    [string] $LogDirectory = 'C:\opt\tdos\apps\abby\shared\logs',
    [string] $NssmPath = 'nssm.exe',
    # Rotate a log file when it reaches this size or is a day old.
    [long] $RotateBytes = 10MB,
    [int] $RotateSeconds = 86400,
    # Run as this account (e.g. 'NT SERVICE\Abby' or '.\abby'); empty: LocalSystem.
    [string] $ServiceAccount = '',
    [securestring] $ServicePassword,
    [switch] $NoStart
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

function Invoke-Nssm {
    param([Parameter(ValueFromRemainingArguments = $true)] [string[]] $Arguments)
    & $script:Nssm @Arguments | Out-Host
    if ($LASTEXITCODE -ne 0) {
        throw "nssm $($Arguments -join ' ') failed with exit code $LASTEXITCODE"
    }
}

$found = Get-Command $NssmPath -ErrorAction SilentlyContinue
if (-not $found) {
    throw "NSSM not found at '$NssmPath'. Install it (https://nssm.cc) or pass -NssmPath."
}
$script:Nssm = $found.Source
$AbbyExe = Join-Path $VenvPath 'Scripts\abby.exe'
if (-not (Test-Path -LiteralPath $AbbyExe)) {
    throw "$AbbyExe not found. Create the venv and 'pip install .' first (docs\DEPLOYMENT_NSSM.md)."
}
if (-not (Test-Path -LiteralPath (Join-Path $AppDirectory '.env'))) {
    Write-Warning "No .env in ${AppDirectory}: copy .env.example to .env and fill in DISCORD_TOKEN and the rest."
}

Write-Host "==> Folders $StorageRoot and $LogDirectory"
New-Item -ItemType Directory -Force -Path $StorageRoot, $LogDirectory | Out-Null

$existing = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
if ($existing) {
    Write-Host "==> Updating the existing service $ServiceName"
    if ($existing.Status -ne 'Stopped') {
        Invoke-Nssm stop $ServiceName
    }
    Invoke-Nssm set $ServiceName Application $AbbyExe
} else {
    Write-Host "==> Installing the service $ServiceName"
    Invoke-Nssm install $ServiceName $AbbyExe
}

# What runs, and where: Abby reads .env from its working directory.
Invoke-Nssm set $ServiceName AppParameters run
Invoke-Nssm set $ServiceName AppDirectory $AppDirectory
Invoke-Nssm set $ServiceName DisplayName $DisplayName
Invoke-Nssm set $ServiceName Description 'Abby makes images for the members of a Discord server (abby run).'
Invoke-Nssm set $ServiceName Start SERVICE_DELAYED_AUTO_START

# Settings that belong to this machine; the rest comes from .env. These win over .env.
Invoke-Nssm set $ServiceName AppEnvironmentExtra `
    STORAGE_BACKEND=filesystem `
    "STORAGE_ROOT=$StorageRoot" `
    PYTHONUNBUFFERED=1 `
    PYTHONIOENCODING=utf-8

# stdout/stderr into the logs folder, appended, rotated by size and age, also while running.
Invoke-Nssm set $ServiceName AppStdout (Join-Path $LogDirectory 'abby.out.log')
Invoke-Nssm set $ServiceName AppStderr (Join-Path $LogDirectory 'abby.err.log')
Invoke-Nssm set $ServiceName AppStdoutCreationDisposition 4
Invoke-Nssm set $ServiceName AppStderrCreationDisposition 4
Invoke-Nssm set $ServiceName AppRotateFiles 1
Invoke-Nssm set $ServiceName AppRotateOnline 1
Invoke-Nssm set $ServiceName AppRotateBytes $RotateBytes
Invoke-Nssm set $ServiceName AppRotateSeconds $RotateSeconds

# Restart after a crash, not in a tight loop; Ctrl+C first so the bot closes cleanly.
Invoke-Nssm set $ServiceName AppExit Default Restart
# Exit 2 is a configuration problem (DISCORD_TOKEN missing or refused, a bad variable):
# restarting cannot fix it, so the service stops and abby.err.log says why.
Invoke-Nssm set $ServiceName AppExit 2 Exit
Invoke-Nssm set $ServiceName AppRestartDelay 10000
Invoke-Nssm set $ServiceName AppThrottle 30000
Invoke-Nssm set $ServiceName AppStopMethodConsole 15000

if ($ServiceAccount) {
    if ($ServicePassword) {
        $plain = [System.Net.NetworkCredential]::new('', $ServicePassword).Password
        Invoke-Nssm set $ServiceName ObjectName $ServiceAccount $plain
    } else {
        Invoke-Nssm set $ServiceName ObjectName $ServiceAccount
    }
} else {
    Invoke-Nssm set $ServiceName ObjectName LocalSystem
}

if ($NoStart) {
    Write-Host "==> Installed; start it with: nssm start $ServiceName"
} else {
    Write-Host "==> Starting $ServiceName"
    Invoke-Nssm start $ServiceName
    Get-Service -Name $ServiceName | Format-Table -AutoSize Name, Status, StartType
}
Write-Host "Logs: $LogDirectory\abby.out.log and abby.err.log"
