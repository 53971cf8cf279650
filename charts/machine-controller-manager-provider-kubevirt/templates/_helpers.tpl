{{/* Names, labels and the flags both containers share. */}}

{{- define "mcm-kubevirt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mcm-kubevirt.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "mcm-kubevirt.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "mcm-kubevirt.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "mcm-kubevirt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcm-kubevirt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mcm-kubevirt.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mcm-kubevirt.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mcm-kubevirt.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mcm-kubevirt.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mcm-kubevirt.machineNamespace" -}}
{{- default .Release.Namespace .Values.machineNamespace }}
{{- end }}

{{/* Where the target kubeconfig Secret is mounted in both containers. */}}
{{- define "mcm-kubevirt.targetKubeconfigDir" -}}
/var/run/secrets/machine-controller-manager/target
{{- end }}

{{/* Flags of both containers: clusters, namespace, leader election, verbosity. */}}
{{- define "mcm-kubevirt.commonArgs" -}}
- --control-kubeconfig=inClusterConfig
{{- with .Values.targetCluster.kubeconfigSecret.name }}
- --target-kubeconfig={{ include "mcm-kubevirt.targetKubeconfigDir" $ }}/{{ $.Values.targetCluster.kubeconfigSecret.key }}
{{- end }}
- --namespace={{ include "mcm-kubevirt.machineNamespace" . }}
- --leader-elect={{ .Values.leaderElection.enabled }}
{{- if .Values.leaderElection.enabled }}
- --leader-elect-lease-duration={{ .Values.leaderElection.leaseDuration }}
- --leader-elect-renew-deadline={{ .Values.leaderElection.renewDeadline }}
- --leader-elect-retry-period={{ .Values.leaderElection.retryPeriod }}
{{- end }}
- --v={{ .Values.verbosity }}
{{- end }}
