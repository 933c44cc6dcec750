// Command backend is the lab's test backend: an HTTP server that answers
// every request with one line naming the pod and node that served it and
// the client address it saw, e.g.
//
//	pod=web-7c9f-x2x node=worker-p001 client=10.0.2.100:51324
//
// so a test can tell which node and pod a flow reached and whether the
// client's own address survived (externalTrafficPolicy: Local). POD_NAME
// and NODE_NAME come from the downward API; it listens on $PORT (8080).
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	pod, node := os.Getenv("POD_NAME"), os.Getenv("NODE_NAME")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pod=%s node=%s client=%s\n", pod, node, r.RemoteAddr)
	})
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	log.Printf("backend %s on %s listening on :%s", pod, node, port)
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
