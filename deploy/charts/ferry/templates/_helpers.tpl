{{/* Name of the chart, overridable. */}}
{{- define "ferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: the release name, or release-chart when they differ. */}}
{{- define "ferry.fullname" -}}
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

{{/* Labels every object carries. */}}
{{- define "ferry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ferry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the agent pods (also used by the NetworkPolicy and the Services). */}}
{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ferry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ferry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image: repository:tag or repository@digest; the tag defaults to the chart's appVersion. */}}
{{- define "ferry.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The headless Service the agents bootstrap from (DNS A records of every agent pod, ready or not). */}}
{{- define "ferry.bootstrapDns" -}}
{{- if .Values.ferry.bootstrapDns }}
{{- join "," .Values.ferry.bootstrapDns }}
{{- else }}
{{- printf "%s-headless.%s.svc.%s:%v" (include "ferry.fullname" .) .Release.Namespace .Values.clusterDomain .Values.service.router.port }}
{{- end }}
{{- end }}

{{/* containerd's mirror targets: this node's agent first (hostPort on the node IP), then extra targets. */}}
{{- define "ferry.mirrorTargets" -}}
{{- join "," (concat (list (printf "http://$(NODE_IP):%v" .Values.service.registry.port)) .Values.ferry.additionalMirrorTargets) }}
{{- end }}

{{/* Whether the pinner webhook uses cert-manager: source cert-manager, or auto and cert-manager is installed. */}}
{{- define "ferry.pinner.certManager" -}}
{{- if or (eq .Values.pinner.tls.source "cert-manager") (and (eq .Values.pinner.tls.source "auto") (.Capabilities.APIVersions.Has "cert-manager.io/v1")) }}true{{- end }}
{{- end }}

{{/* Security context of containers that must run as root: the containerd socket and the root-owned
     hostPath directories need uid 0; no capabilities, no privilege escalation, read-only root. */}}
{{- define "ferry.rootSecurityContext" -}}
runAsUser: 0
runAsGroup: 0
runAsNonRoot: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Security context of containers that need no host access. */}}
{{- define "ferry.nonRootSecurityContext" -}}
runAsUser: 65532
runAsGroup: 65532
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The Secret with the cluster's network key: ferry.networkKeySecret, or the one the chart generates. */}}
{{- define "ferry.networkKeySecretName" -}}
{{- default (printf "%s-network-key" (include "ferry.fullname" .)) .Values.ferry.networkKeySecret }}
{{- end }}
