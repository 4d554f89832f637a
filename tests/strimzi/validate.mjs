// Validates custom resources with the validators @kubernetes-models generates from the CRDs
// of Strimzi, cert-manager, the Gateway API and the Prometheus Operator (pinned in
// package-lock.json). Reads a JSON array of objects on stdin; prints one line per object it
// refuses (kind/name: where: why) and exits 1 if it refused any, 2 if it knows no model for one.
import * as strimzi from "@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1";
import * as certManager from "@kubernetes-models/cert-manager/cert-manager.io/v1";
import * as gateway from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1";
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import { readFileSync } from "node:fs";

const models = {
  "kafka.strimzi.io/v1": strimzi,
  "cert-manager.io/v1": certManager,
  "gateway.networking.k8s.io/v1": gateway,
  "monitoring.coreos.com/v1": monitoring,
};
const objects = JSON.parse(readFileSync(0, "utf8"));
let refused = 0;
for (const object of objects) {
  const Model = models[object.apiVersion]?.[object.kind];
  const name = `${object.kind}/${object.metadata?.name}`;
  if (typeof Model !== "function") {
    console.log(`${name}: no model for ${object.apiVersion}`);
    process.exit(2);
  }
  try {
    new Model(object).validate();
  } catch (error) {
    refused += 1;
    console.log(`${name}: ${error.message.split("\n").join("; ")}`);
  }
}
console.log(`${objects.length - refused} of ${objects.length} valid`);
process.exit(refused ? 1 : 0);
