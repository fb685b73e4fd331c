// One unary gRPC call with grpc-go, Go's own gRPC implementation (Kubernetes' gRPC probes use it):
//
//	call HOST:PORT /package.Service/Method < request-message-bytes
//
// prints {"code", "details", "response" (the answer's bytes, base64)} as JSON. The messages stay bytes (a codec
// that passes them through), encoded and decoded by the Python test, so no generated code is needed here. Built
// by tests/serving/test_grpc.py in GOPATH mode against Debian's golang-google-grpc-dev (no module proxy here).
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io/ioutil"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

type raw struct{}

func (raw) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (raw) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (raw) Name() string { return "proto" }

func main() {
	target, method := os.Args[1], os.Args[2]
	request, _ := ioutil.ReadAll(os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, target, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(raw{}), grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30)))
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	var response []byte
	err = conn.Invoke(ctx, method, &request, &response)
	out := map[string]interface{}{"code": int(status.Code(err)), "details": status.Convert(err).Message()}
	if err == nil {
		out["response"] = base64.StdEncoding.EncodeToString(response)
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
