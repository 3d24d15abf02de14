<#
.SYNOPSIS
    Stop and remove the Abby Windows service (NSSM).

.DESCRIPTION
    Removes the service only. The app folder, the virtual environment, .env, the images
    and ledger under STORAGE_ROOT and the logs stay where they are. Nothing to do when the
    service is not installed.

.EXAMPLE
    .\infra\windows\uninstall-service.ps1
#>
#Requires -RunAsAdministrator
[CmdletBinding()]
param(
    [string] $ServiceName = 'Abby',
    [string] $NssmPath = 'nssm.exe'
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$found = Get-Command $NssmPath -ErrorAction SilentlyContinue
if (-not $found) {
    throw "NSSM not found at '$NssmPath'. Pass -NssmPath."
}
$nssm = $found.Source

$existing = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
if (-not $existing) {
    Write-Host "==> No service named ${ServiceName}: nothing to remove."
    return
}
if ($existing.Status -ne 'Stopped') {
    Write-Host "==> Stopping $ServiceName"
    & $nssm stop $ServiceName | Out-Host
    if ($LASTEXITCODE -ne 0) { throw "nssm stop $ServiceName failed with exit code $LASTEXITCODE" }
}
Write-Host "==> Removing $ServiceName"
& $nssm remove $ServiceName confirm | Out-Host
if ($LASTEXITCODE -ne 0) { throw "nssm remove $ServiceName failed with exit code $LASTEXITCODE" }
Write-Host "Removed. Data and logs under C:\opt\tdos\apps\abby\shared are kept."
