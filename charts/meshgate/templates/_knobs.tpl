{{/*
Helpers of the pod and webhook knobs (extra args, spread, autoscaling,
NetworkPolicy, extra matchConditions).
*/}}

{{/*
The pod's topologySpreadConstraints: the user's full list when given (an item
without labelSelector selects this release's pods, which is what a spread of
meshgate's replicas means), else one spread over nodes from topologySpread.
*/}}
{{- define "meshgate.topologySpreadConstraints" -}}
{{- $selector := dict "matchLabels" (include "meshgate.selectorLabels" . | fromYaml) }}
{{- $constraints := list }}
{{- range .Values.topologySpreadConstraints }}
{{- $constraint := deepCopy . }}
{{- if not (hasKey $constraint "labelSelector") }}
{{- $_ := set $constraint "labelSelector" $selector }}
{{- end }}
{{- $constraints = append $constraints $constraint }}
{{- else }}
{{- $constraints = list (dict
      "topologyKey" "kubernetes.io/hostname"
      "maxSkew" .Values.topologySpread.maxSkew
      "whenUnsatisfiable" .Values.topologySpread.whenUnsatisfiable
      "labelSelector" $selector) }}
{{- end }}
{{- toYaml $constraints }}
{{- end }}

{{/*
The fewest replicas that run: the HPA's floor while it is on, else
replicaCount. A PodDisruptionBudget over a single replica would block every
node drain.
*/}}
{{- define "meshgate.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- if lt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas) }}
{{- fail "autoscaling.maxReplicas must be at least autoscaling.minReplicas" }}
{{- end }}
{{- int .Values.autoscaling.minReplicas }}
{{- else }}
{{- int .Values.replicaCount }}
{{- end }}
{{- end }}

{{/*
The user's extra webhook matchConditions (webhook.matchConditions), as YAML
list items to append to the chart's. They need the API server's support
(Kubernetes 1.28): fail rather than drop conditions the user relies on.
*/}}
{{- define "meshgate.extraMatchConditions" -}}
{{- with .Values.webhook.matchConditions }}
{{- if not (semverCompare ">=1.28-0" $.Capabilities.KubeVersion.Version) }}
{{- fail "webhook.matchConditions need Kubernetes >= 1.28 (with `helm template`, pass --kube-version)" }}
{{- end }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/*
nativePolicies.enabled, refused together with the webhook knobs the native
policies cannot honour (they would enforce where the webhooks are never
called): webhook.excludeNamespaces, objectSelector and matchConditions.
*/}}
{{- define "meshgate.nativePolicies" -}}
{{- if .Values.nativePolicies.enabled }}
{{- if or .Values.webhook.excludeNamespaces .Values.webhook.objectSelector .Values.webhook.matchConditions }}
{{- fail "nativePolicies.enabled does not honour webhook.excludeNamespaces, webhook.objectSelector or webhook.matchConditions: list the namespaces in exemptNamespaces (or use exemptions) instead, or set nativePolicies.enabled=false" }}
{{- end }}
{{- end }}
{{- .Values.nativePolicies.enabled }}
{{- end }}
