// Command backend is the lab's test backend: an HTTP server that answers
// every request with one line naming the pod and node that served it and
// the client address it saw, e.g.
//
//	pod=web-7c9f-x2x node=worker-p001 client=10.0.2.100:51324
//
// so a test can tell which node and pod a flow reached and whether the
// client's own address survived (externalTrafficPolicy: Local). POD_NAME
// and NODE_NAME come from the downward API; it listens on $PORT (8080).
//
// Like a well-behaved application it keeps serving for $SHUTDOWN_DELAY
// (default 5s) after SIGTERM, while the cluster takes it out of its
// Services, then stops.
package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	delay := 5 * time.Second
	if d, err := time.ParseDuration(os.Getenv("SHUTDOWN_DELAY")); err == nil {
		delay = d
	}
	pod, node := os.Getenv("POD_NAME"), os.Getenv("NODE_NAME")
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pod=%s node=%s client=%s\n", pod, node, r.RemoteAddr)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		log.Printf("terminating: serving %v more", delay)
		time.Sleep(delay)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	log.Printf("backend %s on %s listening on :%s", pod, node, port)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
