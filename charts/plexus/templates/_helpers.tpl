{{/*
The name of every object: fullnameOverride, else the release name when it
already says plexus, else <release>-plexus. Truncated to 63 characters, the
longest a label value may be.
*/}}
{{- define "plexus.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Labels every object carries.
*/}}
{{- define "plexus.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "plexus.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
The labels that select the daemon's pods. A DaemonSet's selector cannot
change after it is created, so nothing that changes on upgrade goes here.
*/}}
{{- define "plexus.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
The daemon's image: repository, then @digest or :tag (the chart's
appVersion when no tag is set).
*/}}
{{- define "plexus.image" -}}
{{- $repo := required "image.repository must be set" .Values.image.repository -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (.Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}
{{- end -}}

{{/*
The daemon's settings file (--config), named like its flags: the values
that say how plexus behaves rather than where things are on the node.
*/}}
{{- define "plexus.daemonConfig" -}}
# plexus-daemon settings, named like its flags (`plexus-daemon --help`);
# flags on its command line win over these.
namespace-isolation: {{ .Values.namespaceIsolation }}
global-namespaces: {{ .Values.globalNamespaces | default list | toJson }}
default-networks: {{ .Values.defaultNetworks | default list | toJson }}
system-namespaces: {{ .Values.systemNamespaces | default list | toJson }}
default-network-namespace: {{ required "defaultNetworkNamespace must be set" .Values.defaultNetworkNamespace | toString | toJson }}
{{- with .Values.defaultNetwork }}
default-network: {{ toString . | toJson }}
{{- end }}
{{- with .Values.readinessIndicatorFile }}
readiness-indicator-file: {{ clean . | toJson }}
{{- end }}
added-interface-events: {{ .Values.events.addedInterface }}
hotplug: {{ (.Values.hotplug | default dict).mode | default "builtin" | toString | toJson }}
zap-log-level: {{ required "logLevel must be set" .Values.logLevel | toString | toJson }}
set-aside-leftovers: {{ ne (toString (.Values.migration | default dict).setAsideLeftovers) "false" }}
{{- if eq (toString (.Values.hotplug | default dict).mode) "delegate-api" }}
delegate-api-socket: {{ clean .Values.hotplug.delegateAPISocket | toJson }}
{{- end }}
{{- end -}}

{{/*
The name of the webhook's Deployment, Service, ServiceAccount, RBAC and
PodDisruptionBudget.
*/}}
{{- define "plexus.webhookName" -}}
{{- printf "%s-webhook" (include "plexus.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The Secret holding the webhook's serving certificate (tls.crt, tls.key).
*/}}
{{- define "plexus.webhookSecret" -}}
{{- printf "%s-webhook-cert" (include "plexus.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The labels that select the webhook's pods.
*/}}
{{- define "plexus.webhookSelectorLabels" -}}
{{ include "plexus.selectorLabels" . }}
app.kubernetes.io/component: webhook
{{- end -}}

{{/*
The username the daemon's requests carry: its ServiceAccount's.
*/}}
{{- define "plexus.daemonUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "plexus.fullname" .) -}}
{{- end -}}

{{/*
webhook.certificates, checked.
*/}}
{{- define "plexus.webhookCertificates" -}}
{{- $mode := toString .Values.webhook.certificates -}}
{{- if not (has $mode (list "self" "cert-manager")) -}}
{{- fail (printf "webhook.certificates must be self or cert-manager, not %q" $mode) -}}
{{- end -}}
{{- $mode -}}
{{- end -}}
