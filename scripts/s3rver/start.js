// start.js - runs the test S3 server on loopback for scripts/with-s3rver.sh.
//
// Usage: node start.js DATA_DIR BUCKET PORT_FILE
// Listens on 127.0.0.1 on a port the kernel picks, creates BUCKET, writes the
// port to PORT_FILE once it accepts connections, and closes on SIGTERM/SIGINT.
'use strict';

const fs = require('fs');
const path = require('path');
const S3rver = require('s3rver');
const S3Error = require('s3rver/lib/models/error');

const [directory, bucket, portFile] = process.argv.slice(2);
if (!directory || !bucket || !portFile) {
  console.error('usage: node start.js DATA_DIR BUCKET PORT_FILE');
  process.exit(2);
}

const server = new S3rver({
  address: '127.0.0.1',
  port: 0,
  directory,
  silent: true,
  vhostBuckets: false,
  configureBuckets: [{ name: bucket, configs: [] }],
});

// s3rver 3.7.1 has no AbortMultipartUpload (it answers 405 MethodNotAllowed).
// This adds it as S3 does: DELETE /bucket/key?uploadId=ID drops the pending
// upload and its parts (204), or answers 404 NoSuchUpload.
server.middleware.unshift(async (ctx, next) => {
  if (ctx.method !== 'DELETE' || !('uploadId' in ctx.query)) return next();
  const match = /^\/([^/]+)\/.+$/.exec(ctx.path);
  const uploadId = String(ctx.query.uploadId);
  if (!match || !/^[0-9a-f]+$/.test(uploadId)) return next();
  const dir = path.join(server.store.getResourcePath(match[1], undefined, 'uploads'), uploadId);
  if (!fs.existsSync(dir)) {
    throw new S3Error(
      'NoSuchUpload',
      'The specified upload does not exist. The upload ID may be invalid, ' +
        'or the upload may have been aborted or completed.',
      { UploadId: uploadId },
    );
  }
  fs.rmSync(dir, { recursive: true, force: true });
  ctx.status = 204;
});

server.run().then(
  (address) => {
    // Written to a temporary name and renamed, so a reader never sees half a port.
    const tmp = path.join(path.dirname(portFile), `.${path.basename(portFile)}.tmp`);
    fs.writeFileSync(tmp, `${address.port}\n`);
    fs.renameSync(tmp, portFile);
  },
  (err) => {
    console.error(`s3rver failed to start: ${err.message}`);
    process.exit(1);
  },
);

let closing = false;
function stop() {
  if (closing) return;
  closing = true;
  server.close(() => process.exit(0));
  // Keep-alive connections can hold close() open; do not wait for them.
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
