{{/* The release's full name (the Deployment, ServiceAccount, roles, Lease by default). */}}
{{- define "crbridge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}
{{- define "crbridge.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "crbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "crbridge.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "crbridge.fullname" .) -}}
{{- end -}}
{{/* The leader-election Lease's name. */}}
{{- define "crbridge.leaseId" -}}
{{- .Values.leaderElection.id | default (include "crbridge.fullname" .) -}}
{{- end -}}
{{/* "true" when a file backend is used (state, or a pipeline's checkpoint): /var/lib/crbridge needs a volume. */}}
{{- define "crbridge.fileBackend" -}}
{{- $file := eq .Values.state.backend "file" -}}
{{- range $name, $p := .Values.pipelines -}}
{{- if ne (dig "spec" "source" "checkpoint" "backend" "file" $p) "kubernetes" -}}{{- $file = true -}}{{- end -}}
{{- end -}}
{{- if $file }}true{{ end -}}
{{- end -}}
{{/* Refuses value combinations that would misbehave, saying what to change. */}}
{{- define "crbridge.checks" -}}
{{- if and (include "crbridge.fileBackend" .) (gt (int .Values.replicaCount) 1) -}}
{{- fail (printf "replicaCount is %d, but a file backend is used (state.backend %q, or a pipeline's spec.source.checkpoint.backend is not \"kubernetes\"): its state is on one pod's volume, so set replicaCount: 1, or use the kubernetes backends (state.backend: kubernetes and checkpoint.backend: kubernetes in every pipeline)" (int .Values.replicaCount) .Values.state.backend) -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) -}}
{{- fail (printf "replicaCount is %d, but leaderElection.enabled is false: every replica would emit every event; enable leader election or set replicaCount: 1" (int .Values.replicaCount)) -}}
{{- end -}}
{{- end -}}
