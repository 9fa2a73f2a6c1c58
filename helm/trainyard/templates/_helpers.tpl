{{/*
Names and labels every template shares, written down once.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "trainyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: fullnameOverride, else RELEASE-NAME (just RELEASE when
the release name already contains the chart name). 63 characters at most (DNS label).
*/}}
{{- define "trainyard.fullname" -}}
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

{{/* chart-version, as the helm.sh/chart label wants it. */}}
{{- define "trainyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels selectors use: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "trainyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trainyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: control-plane
{{- end }}

{{/* The standard app.kubernetes.io/* labels on every object of the release. */}}
{{- define "trainyard.labels" -}}
helm.sh/chart: {{ include "trainyard.chart" . }}
{{ include "trainyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: trainyard
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The ServiceAccount the control plane runs as. */}}
{{- define "trainyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "trainyard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding admin-token (and database-url for PostgreSQL). */}}
{{- define "trainyard.secretName" -}}
{{- default (include "trainyard.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* The namespace worker pods (and the leader Lease) live in. */}}
{{- define "trainyard.workersNamespace" -}}
{{- default .Release.Namespace .Values.workers.namespace }}
{{- end }}

{{/* image@digest, else image:tag (tag defaulting to the chart's appVersion). */}}
{{- define "trainyard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "trainyard.workerImage" -}}
{{- printf "%s:%s" .Values.workers.image.repository (default .Chart.AppVersion .Values.workers.image.tag) }}
{{- end }}

{{/* The PersistentVolumeClaim holding the SQLite database. */}}
{{- define "trainyard.sqliteClaimName" -}}
{{- default (printf "%s-data" (include "trainyard.fullname" .)) .Values.store.sqlite.existingClaim }}
{{- end }}

{{/*
Refuse value combinations that would install something unsafe, with a message that
says what to change. Called from the Deployment, so every render checks them.
*/}}
{{- define "trainyard.validate" -}}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) }}
{{- fail "serviceAccount.create=false needs serviceAccount.name: the control plane never runs as the namespace's default ServiceAccount, which every other pod there shares (and the chart's roles would be bound to it)" }}
{{- end }}
{{- if and (eq .Values.store.type "sqlite") (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "replicaCount=%d with store.type=sqlite is refused: SQLite on a ReadWriteOnce volume serves one replica only. Use store.type=postgresql (store.postgresql.url or secrets.existingSecret) for more replicas." (int .Values.replicaCount)) }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (ge (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) }}
{{- fail (printf "podDisruptionBudget.minAvailable=%d with replicaCount=%d is refused: no pod could ever be evicted, so every node drain would hang. Use at most %d." (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount) (sub (int .Values.replicaCount) 1)) }}
{{- end }}
{{- if and (eq .Values.store.type "postgresql") (not .Values.store.postgresql.url) (not .Values.secrets.existingSecret) }}
{{- fail "store.type=postgresql needs store.postgresql.url, or secrets.existingSecret naming a Secret with a database-url key" }}
{{- end }}
{{- if and .Values.store.postgresql.url .Values.secrets.existingSecret }}
{{- fail "store.postgresql.url and secrets.existingSecret are exclusive: with an existing Secret the URL is its database-url key" }}
{{- end }}
{{- if and .Values.secrets.adminToken .Values.secrets.existingSecret }}
{{- fail "secrets.adminToken and secrets.existingSecret are exclusive: with an existing Secret the token is its admin-token key" }}
{{- end }}
{{- end }}

{{/*
Cluster-scoped objects (ClusterRole, ClusterRoleBinding) carry the namespace too, so
releases of the same name in two namespaces never share or overwrite them.
*/}}
{{- define "trainyard.clusterRoleName" -}}
{{- printf "%s-%s" .Release.Namespace (include "trainyard.fullname" .) }}
{{- end }}
