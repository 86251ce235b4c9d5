#!/usr/bin/env node
// The `openchat` command. The project is TypeScript run as is (no build step):
// tsx compiles each module on load, so a fresh clone works after `npm ci`.
import { register } from 'tsx/esm/api';

register();
await import('./main.ts');
