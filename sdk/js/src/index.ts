export * from "./generated/protocol.js";
