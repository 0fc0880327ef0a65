import { describe, expect, it } from 'vitest';
import { leftOutConnections } from '../../src/criu/left-out-connections.js';

// Rows as a session's /proc/PID/net/tcp and tcp6 print them on this (little-endian) machine after a dump.
const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:22B8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 347114 1 00000000a70a507d 100 0 0 10 0
   1: 0202DC0A:22B8 0102DC0A:CE52 01 00000000:0000008A 00:00000000 00000000     0        0 0 1 00000000737514ca 20 4 30 10 -1
   2: 0202DC0A:22B8 0102DC0A:CE54 01 00000000:00000000 02:000AF3A5 00000000     0        0 351201 2 00000000a1b2c3d4 20 4 30 10 -1
   3: 0202DC0A:22B8 0102DC0A:CE56 06 00000000:00000000 03:00001762 00000000     0        0 0 3 00000000737514cb
   4: 0100007F:B9A5 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 0 1 00000000737514cc 20 4 30 10 -1
   5: 0202DC0A:1F90 0202DC0A:B9A6 01 00000000:00000000 00:00000000 00000000     0        0 0 1 00000000737514cd 20 4 30 10 -1
`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000202DC0A:22B8 0000000000000000FFFF00000102DC0A:CE60 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000011111111 20 4 30 10 -1
   1: B80D0120000000000000000002000000:22B8 B80D0120000000000000000001000000:CE62 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000022222222 20 4 30 10 -1
   2: 00000000000000000000000001000000:22B8 00000000000000000000000001000000:CE64 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000033333333 20 4 30 10 -1
`;

describe('the connections a dump left out (leftOutConnections)', () => {
  it('should name the established connections with no socket file (never accepted) to a client outside the session', () => {
    // Not the listener, not an accepted connection (inode 351201), not TIME_WAIT, not loopback, not the session to itself.
    expect(leftOutConnections(TCP)).toEqual([{ family: 4, local: { address: '10.220.2.2', port: 8888 }, remote: { address: '10.220.2.1', port: 52818 } }]);
  });

  it('should read IPv6 rows, an IPv4 client of a dual-stack socket as IPv4, and leave out loopback', () => {
    expect(leftOutConnections(TCP6)).toEqual([
      { family: 4, local: { address: '10.220.2.2', port: 8888 }, remote: { address: '10.220.2.1', port: 52832 } },
      { family: 6, local: { address: '2001:db8:0:0:0:0:0:2', port: 8888 }, remote: { address: '2001:db8:0:0:0:0:0:1', port: 52834 } },
    ]);
  });

  it('should find nothing in an empty or unreadable table', () => {
    expect(leftOutConnections('')).toEqual([]);
    expect(leftOutConnections('header only\n')).toEqual([]);
    expect(leftOutConnections('h\n 0: zz:22B8 0102DC0A:CE52 01 0:0 0:0 0 0 0 0 1\n')).toEqual([]);
  });
});
