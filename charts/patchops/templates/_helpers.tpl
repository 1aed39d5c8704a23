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

{{- define "patchops.logEnv" -}}
- name: PATCHOPS_LOG
  value: {{ .Values.logFilter | quote }}
{{- end -}}

{{- define "patchops.storeEnv" -}}
- name: PATCHOPS_STORE
  valueFrom:
    secretKeyRef:
      name: {{ include "patchops.databaseSecret" . }}
      key: {{ if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}url{{ end }}
{{ include "patchops.logEnv" . }}
{{- end -}}

{{- /* The namespaces the controller manages (each a site). */ -}}
{{- define "patchops.sites" -}}
{{- .Values.controller.namespaces | default (list .Release.Namespace) | uniq | toJson -}}
{{- end -}}

{{- define "patchops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ .Values.serviceAccount.name | default (printf "%s-controller" (include "patchops.fullname" .)) }}
{{- else -}}
{{ required "serviceAccount.name: the existing ServiceAccount the controller runs as (serviceAccount.create is false)" .Values.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{- /* Pod spec settings both components share. */ -}}
{{- define "patchops.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.podSecurityContext }}
securityContext: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "patchops.podMetadata" -}}
{{- with .Values.podAnnotations }}
annotations: {{- toYaml . | nindent 2 }}
{{- end }}
labels: {{- include "patchops.labels" . | nindent 2 }}
{{- with .Values.podLabels }}
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- /* Role rules: what the controller does in each managed namespace, and the Lease. */ -}}
{{- define "patchops.siteRules" -}}
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [patchops.dev]
  resources: [alerts, clientsettings, collections, compliancepolicies, deploymentpackages, deploymentrules, deploymenttemplates, notificationproviders, updatecatalogs, updatelists, waivers]
  verbs: [list, watch]
- apiGroups: [patchops.dev]
  resources: [updatedeployments]
  verbs: [list, patch, watch]
- apiGroups: [patchops.dev]
  resources: [collections/status, compliancepolicies/status, deploymentpackages/status, notificationproviders/status, updatecatalogs/status, updatedeployments/status, updatelists/status, waivers/status]
  verbs: [patch]
{{- end -}}

{{- define "patchops.leaseRules" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create, get, patch]
{{- end -}}
