// Validates Strimzi resources with the validators @kubernetes-models/strimzi-kafka-operator
// generates from Strimzi's CRDs. Reads a JSON array of objects on stdin; prints one line per
// object it refuses (kind/name: where: why) and exits 1 if it refused any, 2 if it knows
// no model for one.
import * as strimzi from "@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1";
import { readFileSync } from "node:fs";

const objects = JSON.parse(readFileSync(0, "utf8"));
let refused = 0;
for (const object of objects) {
  const Model = strimzi[object.kind];
  const name = `${object.kind}/${object.metadata?.name}`;
  if (object.apiVersion !== "kafka.strimzi.io/v1" || typeof Model !== "function") {
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
