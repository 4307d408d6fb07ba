{{/*
Name of the chart, overridable with nameOverride.
*/}}
{{- define "meshgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name; also the Service name the webhooks call. Truncated
to 63 characters (DNS label limit).
*/}}
{{- define "meshgate.fullname" -}}
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

{{- define "meshgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "meshgate.labels" -}}
helm.sh/chart: {{ include "meshgate.chart" . }}
{{ include "meshgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: admission-webhook
app.kubernetes.io/part-of: meshgate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "meshgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meshgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "meshgate.serviceAccountName" -}}
{{- default (include "meshgate.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "meshgate.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The Secret holding the serving certificate (tls.crt, tls.key and, except with
existingSecret, ca.crt).
*/}}
{{- define "meshgate.tlsSecretName" -}}
{{- if eq .Values.certificates.mode "existingSecret" }}
{{- required "certificates.existingSecret.name is required when certificates.mode is existingSecret" .Values.certificates.existingSecret.name }}
{{- else }}
{{- printf "%s-tls" (include "meshgate.fullname" .) }}
{{- end }}
{{- end }}

{{/*
The cert-manager Certificate of the serving certificate.
*/}}
{{- define "meshgate.servingCertificateName" -}}
{{- printf "%s-serving" (include "meshgate.fullname" .) }}
{{- end }}

{{/*
DNS names the API server may use to reach the Service (it uses
<svc>.<ns>.svc); all are in the serving certificate.
*/}}
{{- define "meshgate.dnsNames" -}}
{{- $svc := include "meshgate.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{/*
A mode as the server spells it. YAML 1.1, which Helm uses for values files,
reads an unquoted `off` as the boolean false: turn it back into "off".
*/}}
{{- define "meshgate.modeName" -}}
{{- if kindIs "bool" . }}{{ "off" }}{{ else }}{{ . }}{{ end }}
{{- end }}

{{/*
The server's config.yaml: exactly the keys it accepts (it rejects unknown
ones), each already checked by values.schema.json.
*/}}
{{- define "meshgate.config" -}}
{{- $rules := dict }}
{{- range $rule, $mode := .Values.rules }}
{{- $_ := set $rules $rule (include "meshgate.modeName" $mode) }}
{{- end }}
{{- $config := dict
      "mode" (include "meshgate.modeName" .Values.mode)
      "rules" $rules
      "meshRootNamespace" .Values.meshRootNamespace
      "exemptNamespaces" .Values.exemptNamespaces
      "exemptions" .Values.exemptions
      "exemptionObjects" .Values.exemptionObjects
      "trustDomain" .Values.trustDomain
      "whileSyncing" .Values.whileSyncing
      "workloadCertificates" .Values.workloadCertificates
      "certificates" .Values.shortLivedCertificates
      "backgroundAudit" .Values.backgroundAudit
      "events" .Values.events }}
{{- if .Values.clusterDomain }}
{{- $_ := set $config "clusterDomain" .Values.clusterDomain }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
failurePolicy of the validating webhook. An explicit value wins. Otherwise Fail
when anything is enforced (global mode enforce, or a rule overridden to
enforce), and Ignore when meshgate only reports: a webhook in audit mode must
never block the cluster when it is down.
*/}}
{{- define "meshgate.validatingFailurePolicy" -}}
{{- if .Values.webhook.validating.failurePolicy }}
{{- .Values.webhook.validating.failurePolicy }}
{{- else if or (eq (include "meshgate.modeName" .Values.mode) "enforce") (has "enforce" (values .Values.rules)) }}
{{- "Fail" }}
{{- else }}
{{- "Ignore" }}
{{- end }}
{{- end }}

{{/*
failurePolicy of the workloads webhook: webhook.validating.workloadsFailurePolicy
when set (Ignore while the native policies hold the stateless rules), else the
validating one.
*/}}
{{- define "meshgate.workloadsFailurePolicy" -}}
{{- .Values.webhook.validating.workloadsFailurePolicy | default (include "meshgate.validatingFailurePolicy" .) }}
{{- end }}

{{/*
Namespaces the API server never sends to meshgate, whatever the object: the
Kubernetes system namespaces, the release namespace (meshgate must never wait
on itself) and webhook.excludeNamespaces. JSON list.
*/}}
{{- define "meshgate.systemSkippedNamespaces" -}}
{{- concat (list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace) .Values.webhook.excludeNamespaces | uniq | toJson }}
{{- end }}

{{/*
Namespaces whose workloads, Namespace objects, DestinationRules, Sidecars and
Certificates are never sent: the system ones plus exemptNamespaces, where the
server would skip them anyway. This is what keeps istiod, the gateways and
cert-manager starting while meshgate is down. JSON list.
*/}}
{{- define "meshgate.workloadSkippedNamespaces" -}}
{{- concat (include "meshgate.systemSkippedNamespaces" . | fromJsonArray) .Values.exemptNamespaces | uniq | toJson }}
{{- end }}

{{/*
Namespaces whose PeerAuthentications and AuthorizationPolicies are never sent:
as for workloads, except the mesh root namespace, whose policies apply
mesh-wide and stay guarded even though its workloads are exempt. JSON list.
*/}}
{{- define "meshgate.policySkippedNamespaces" -}}
{{- $skip := include "meshgate.systemSkippedNamespaces" . | fromJsonArray }}
{{- range .Values.exemptNamespaces }}
{{- if ne . $.Values.meshRootNamespace }}
{{- $skip = append $skip . }}
{{- end }}
{{- end }}
{{- $skip | uniq | toJson }}
{{- end }}

{{/*
The parts every webhook shares. Called with (dict "root" $ "path" "/validate"
"caBundle" $caBundle "skip" <namespaces> ["policies" true] ["exemptions" true]).
*/}}
{{- define "meshgate.webhookCommon" -}}
{{- $root := .root -}}
admissionReviewVersions: [v1]
{{- /* /validate records an Event for an object admitted with audit-mode
       findings, never for a dry run. */}}
sideEffects: {{ and (eq .path "/validate") $root.Values.events.enabled | ternary "NoneOnDryRun" "None" }}
timeoutSeconds: {{ $root.Values.webhook.timeoutSeconds }}
clientConfig:
  service:
    name: {{ include "meshgate.fullname" $root }}
    namespace: {{ $root.Release.Namespace }}
    path: {{ .path }}
    port: 443
  {{- with .caBundle }}
  caBundle: {{ . }}
  {{- end }}
# Selected by namespace NAME: kubernetes.io/metadata.name is set by the API
# server on every namespace (and on a Namespace object being created) and
# cannot be changed, so a user can neither forge it nor relabel a namespace
# out of meshgate's sight. An objectSelector would match labels the requester
# writes; matchConditions need Kubernetes 1.28 (the chart supports 1.24).
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- range .skip }}
        - {{ . | quote }}
        {{- end }}
{{- /* Not for exemption objects: their requester writes the labels, and
       could label an exemption out of meshgate's maxDuration check. */}}
{{- with (not .exemptions | ternary $root.Values.webhook.objectSelector dict) }}
# webhook.objectSelector: labels the requester writes (see values.yaml).
objectSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if semverCompare ">=1.28-0" $root.Capabilities.KubeVersion.Version }}
# matchConditions (CEL, beta and on by default since Kubernetes 1.28) skip
# requests that are safe to skip, and nothing else:
# - meshgate's own ServiceAccount: meshgate only reads the cluster, so this never
#   matches today; it guarantees the webhook can never end up waiting on itself.
# - kubelets (system:node:*): a kubelet only creates mirror pods of static pods,
#   which run whatever the API server answers: denying one would only hide a
#   running pod from the API, and patching one would make the API show a pod
#   that differs from the one the kubelet runs.
{{- if .policies }}
# - DELETEs by the namespace controller: deleting a namespace deletes its
#   policies, baseline included; judging that would leave the namespace stuck
#   in Terminating (for good while meshgate is down), and the workloads the
#   baseline protected are being deleted with it.
{{- end }}
# Controllers (ReplicaSet, Job, ...) are deliberately not skipped: the pods they
# create are exactly what the validating webhook must see.
matchConditions:
  - name: not-meshgate-itself
    expression: {{ printf "request.userInfo.username != 'system:serviceaccount:%s:%s'" $root.Release.Namespace (include "meshgate.serviceAccountName" $root) | quote }}
  - name: not-kubelet-mirror-pod
    expression: "!request.userInfo.username.startsWith('system:node:')"
{{- if .policies }}
  - name: not-namespace-deletion
    expression: "!(request.operation == 'DELETE' && request.userInfo.username in ['system:serviceaccount:kube-system:namespace-controller', 'system:kube-controller-manager'])"
{{- end }}
{{- with include "meshgate.extraMatchConditions" $root }}
  {{- . | nindent 2 }}
{{- end }}
{{- else }}
{{- $_ := include "meshgate.extraMatchConditions" $root }}
{{- end }}
{{- end }}
