{{/* Names ---------------------------------------------------------------------------- */}}

{{- define "wardgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix; leaves room for the longest suffix ("-injector-ca-issuer"). */}}
{{- define "wardgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "wardgate.operator.name" -}}{{ include "wardgate.fullname" . }}-operator{{- end -}}
{{- define "wardgate.injector.name" -}}{{ include "wardgate.fullname" . }}-injector{{- end -}}
{{- define "wardgate.injector.tlsSecret" -}}{{ include "wardgate.fullname" . }}-injector-tls{{- end -}}
{{- define "wardgate.sidecarConfig.name" -}}{{ include "wardgate.fullname" . }}-sidecar{{- end -}}

{{/* Labels ---------------------------------------------------------------------------- */}}

{{- define "wardgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "wardgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wardgate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "operator") */}}
{{- define "wardgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wardgate.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "wardgate.componentLabels" -}}
{{ include "wardgate.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Images: (dict "image" .Values.images.operator "ctx" $) -> repo@digest or repo:tag */}}
{{- define "wardgate.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Security ------------------------------------------------------------------------- */}}

{{/* Pod-level restricted security context. */}}
{{- define "wardgate.podSecurityContext" -}}
runAsNonRoot: true
{{- with .Values.podSecurity.runAsUser }}
runAsUser: {{ . }}
{{- end }}
{{- with .Values.podSecurity.runAsGroup }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level restricted security context (Pod Security Standard "restricted"). */}}
{{- define "wardgate.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Scheduling block shared by the Deployments: (dict "cfg" .Values.operator) */}}
{{- define "wardgate.scheduling" -}}
{{- with .cfg.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .cfg.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .cfg.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .cfg.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* Namespaces the webhooks never see: the release namespace, kube-system and extras. */}}
{{- define "wardgate.excludedNamespaces" -}}
{{- $ns := list .Release.Namespace "kube-system" -}}
{{- range .Values.webhooks.excludeNamespaces -}}{{- $ns = append $ns . -}}{{- end -}}
{{- toJson (uniq $ns) -}}
{{- end -}}

{{/* sidecar.mode with `auto` resolved against the cluster's version (native from 1.32). */}}
{{- define "wardgate.sidecarMode" -}}
{{- if eq .Values.sidecar.mode "auto" -}}
{{- if semverCompare ">=1.32-0" .Capabilities.KubeVersion.Version -}}native{{- else -}}classic{{- end -}}
{{- else -}}
{{- .Values.sidecar.mode -}}
{{- end -}}
{{- end -}}

{{/* The injector's sidecar config document (also hashed into the injector pod template). */}}
{{- define "wardgate.sidecarConfig" -}}
image: {{ include "wardgate.image" (dict "image" .Values.images.gateway "ctx" $) | quote }}
imagePullPolicy: {{ .Values.images.gateway.pullPolicy }}
resources:
  {{- toYaml .Values.sidecar.resources | nindent 2 }}
proxyPort: {{ .Values.sidecar.proxyPort }}
statusPort: {{ .Values.sidecar.statusPort }}
adminPort: {{ .Values.sidecar.adminPort }}
adminAddress: {{ .Values.sidecar.adminAddress | quote }}
mode: {{ include "wardgate.sidecarMode" . }}
{{- end -}}
