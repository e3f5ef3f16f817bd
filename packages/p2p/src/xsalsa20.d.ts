// Types for `xsalsa20` (the cipher @libp2p/pnet uses; the package ships none).
declare module 'xsalsa20' {
  interface XSalsa20 {
    /** Encrypt or decrypt the next bytes of the stream (XOR with the key stream). */
    update(input: Uint8Array, output?: Uint8Array): Uint8Array;
    finalize(): void;
  }
  function xsalsa20(nonce: Uint8Array, key: Uint8Array): XSalsa20;
  export default xsalsa20;
}
