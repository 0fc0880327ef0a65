// `node --import ./record-loads.mjs`: writes the URL of every module the process loads through the ESM loader to
// the file named by HUBSHIFT_LOADED_FILE, one a line, so that a test can see which packages a command pulled in.
import { register } from 'node:module';

register('./record-loads-hooks.mjs', import.meta.url, { data: { file: process.env.HUBSHIFT_LOADED_FILE } });
