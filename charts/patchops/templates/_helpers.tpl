{{- define "patchops.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "patchops.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "patchops.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "patchops.databaseSecret" -}}
{{ .Values.database.existingSecret | default (printf "%s-database" (include "patchops.fullname" .)) }}
{{- end -}}

{{- define "patchops.enrollmentSecret" -}}
{{ .Values.enrollment.existingSecret | default (printf "%s-enrollment" (include "patchops.fullname" .)) }}
{{- end -}}

{{- define "patchops.storeEnv" -}}
- name: PATCHOPS_STORE
  valueFrom:
    secretKeyRef:
      name: {{ include "patchops.databaseSecret" . }}
      key: {{ if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}url{{ end }}
- name: PATCHOPS_LOG
  value: {{ .Values.logFilter | quote }}
{{- end -}}
