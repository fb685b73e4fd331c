// One unary gRPC call with @grpc/grpc-js, Node's own gRPC implementation (HTTP/2 from Node's nghttp2):
//   node call.js HOST:PORT /package.Service/Method < request-message-bytes
// prints {"code", "details", "response" (the answer's bytes, base64)} as JSON. The messages stay bytes, encoded
// and decoded by the Python test with tensorflow-serving-api's classes, so no .proto files are needed here.
const grpc = require("@grpc/grpc-js");

const [target, method] = process.argv.slice(2);
const chunks = [];
process.stdin.on("data", (chunk) => chunks.push(chunk));
process.stdin.on("end", () => {
  const client = new grpc.Client(target, grpc.credentials.createInsecure(), {
    "grpc.max_send_message_length": -1,
    "grpc.max_receive_message_length": -1,
  });
  const asIs = (bytes) => bytes;
  const options = { deadline: Date.now() + 60_000 };
  client.makeUnaryRequest(method, asIs, asIs, Buffer.concat(chunks), new grpc.Metadata(), options, (error, answer) => {
    const result = error
      ? { code: error.code, details: error.details }
      : { code: 0, details: "", response: answer.toString("base64") };
    process.stdout.write(JSON.stringify(result));
    client.close();
  });
});
