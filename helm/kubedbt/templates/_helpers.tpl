{{/*
The chart's name, overridable with nameOverride.
*/}}
{{- define "kubedbt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of the release's own objects (Roles, RoleBindings, test hooks), cut to 63 characters
because some Kubernetes name fields are limited to that (by the DNS naming spec). The release name
is used alone when it already contains the chart name.
*/}}
{{- define "kubedbt.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, as used by the helm.sh/chart label.
*/}}
{{- define "kubedbt.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object of the release.
*/}}
{{- define "kubedbt.labels" -}}
helm.sh/chart: {{ include "kubedbt.chart" . }}
{{ include "kubedbt.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels: the subset of the labels that identifies the release.
*/}}
{{- define "kubedbt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubedbt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the dbt pods run as (DbtRunSpec's service_account_name).
*/}}
{{- define "kubedbt.serviceAccountName" -}}
{{- .Values.serviceAccount.name }}
{{- end }}

{{/*
The ServiceAccount created for the launcher when launcher.createServiceAccount is true.
*/}}
{{- define "kubedbt.launcherServiceAccountName" -}}
kubedbt-launcher
{{- end }}
