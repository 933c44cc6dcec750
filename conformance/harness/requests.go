package harness

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"k8s.io/client-go/kubernetes"
)

// writeVerbs are the apiserver_request_total verbs that change objects.
var writeVerbs = map[string]bool{"POST": true, "PUT": true, "PATCH": true, "DELETE": true, "CREATE": true, "UPDATE": true, "APPLY": true}

// APIWrites reads the API server's request counters
// (apiserver_request_total) and sums the writes per "VERB
// resource[/subresource]", over every client. Counted at the API server, so
// a test sees what the whole cluster paid, whoever sent it.
func APIWrites(ctx context.Context, cs kubernetes.Interface) (map[string]float64, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the API server's metrics: %w", err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	const metric = "apiserver_request_total{"
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric) {
			continue
		}
		labels := parseLabels(line[len(metric):strings.LastIndex(line, "}")])
		if !writeVerbs[labels["verb"]] {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[strings.LastIndex(line, " ")+1:]), 64)
		if err != nil {
			continue
		}
		key := labels["verb"] + " " + labels["resource"]
		if sub := labels["subresource"]; sub != "" {
			key += "/" + sub
		}
		out[key] += v
	}
	return out, sc.Err()
}

// WritesDelta is after minus before, keeping only keys that grew and whose
// resource (the part after the verb, before any "/") is in resources (all
// when resources is empty).
func WritesDelta(before, after map[string]float64, resources ...string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		_, res, _ := strings.Cut(k, " ")
		res, _, _ = strings.Cut(res, "/")
		if len(resources) > 0 && !slices.Contains(resources, res) {
			continue
		}
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok {
			out[k] = strings.Trim(v, `"`)
		}
	}
	return out
}

// TotalWrites adds up a write count map (APIWrites, WritesDelta).
func TotalWrites(w map[string]float64) float64 {
	var n float64
	for _, v := range w {
		n += v
	}
	return n
}
