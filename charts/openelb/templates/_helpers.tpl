{{/* Labels on every object of the release. */}}
{{- define "openelb.labels" -}}
app.kubernetes.io/part-of: openelb
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* image renders repository:tag, the tag defaulting to the appVersion. */}}
{{- define "openelb.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}
