// Command grpcgateway is a benchmark peer only: grpc-gateway (Go) generated from the same
// contracts (proto/) as the Python gateway, serving the ledger's REST routes in front of one
// ledger over plaintext gRPC on loopback. bench/gateway.py builds it with
// tools/bench/install-tools.sh (the generated packages live in .build/, never committed) and
// measures its CPU per request beside the Python gateway's.
package main

import (
	"context"
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	ledgerv1 "finmesh/bench/grpcgateway/gen/finmesh/ledger/v1"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "HTTP address to serve on")
	ledger := flag.String("ledger", "127.0.0.1:50051", "the ledger's gRPC address")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	mux := runtime.NewServeMux()
	options := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if err := ledgerv1.RegisterLedgerServiceHandlerFromEndpoint(ctx, mux, *ledger, options); err != nil {
		log.Fatalf("grpcgateway: cannot register the ledger's routes: %v", err)
	}
	server := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = server.Shutdown(shutdown)
	}()
	log.Printf("grpcgateway: serving %s in front of the ledger at %s", *listen, *ledger)
	if err := server.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatalf("grpcgateway: %v", err)
	}
}
