#!/usr/bin/env node
// The installed entry point: runs the compiled CLI (`npm run build` writes it).
import '../build/broker/cli/main.js'
