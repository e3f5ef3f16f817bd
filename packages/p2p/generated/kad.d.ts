import type { Codec, DecodeOptions } from 'protons-runtime';
import type { Uint8ArrayList } from 'uint8arraylist';
export declare enum MessageType {
    PUT_VALUE = "PUT_VALUE",
    GET_VALUE = "GET_VALUE",
    ADD_PROVIDER = "ADD_PROVIDER",
    GET_PROVIDERS = "GET_PROVIDERS",
    FIND_NODE = "FIND_NODE",
    PING = "PING"
}
export declare namespace MessageType {
    const codec: () => Codec<MessageType>;
}
export interface PeerInfo {
    id: Uint8Array<ArrayBuffer>;
    multiaddrs: Uint8Array<ArrayBuffer>[];
}
export declare namespace PeerInfo {
    const codec: () => Codec<PeerInfo>;
    interface PeerInfoIdFieldEvent {
        field: '$.id';
        value: Uint8Array<ArrayBuffer>;
    }
    interface PeerInfoMultiaddrsFieldEvent {
        field: '$.multiaddrs[]';
        index: number;
        value: Uint8Array<ArrayBuffer>;
    }
    function encode(obj: Partial<PeerInfo>): Uint8Array<ArrayBuffer>;
    function decode(buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<PeerInfo>): PeerInfo;
    function stream(buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<PeerInfo>): Generator<PeerInfoIdFieldEvent | PeerInfoMultiaddrsFieldEvent>;
}
export interface Message {
    type: MessageType;
    key?: Uint8Array<ArrayBuffer>;
    closer: PeerInfo[];
    providers: PeerInfo[];
}
export declare namespace Message {
    const codec: () => Codec<Message>;
    interface MessageTypeFieldEvent {
        field: '$.type';
        value: MessageType;
    }
    interface MessageKeyFieldEvent {
        field: '$.key';
        value: Uint8Array<ArrayBuffer>;
    }
    interface MessageCloserIdFieldEvent {
        field: '$.closer[].id';
        value: Uint8Array<ArrayBuffer>;
        index: number;
    }
    interface MessageCloserMultiaddrsFieldEvent {
        field: '$.closer[].multiaddrs[]';
        index: number;
        value: Uint8Array<ArrayBuffer>;
    }
    interface MessageProvidersIdFieldEvent {
        field: '$.providers[].id';
        value: Uint8Array<ArrayBuffer>;
        index: number;
    }
    interface MessageProvidersMultiaddrsFieldEvent {
        field: '$.providers[].multiaddrs[]';
        index: number;
        value: Uint8Array<ArrayBuffer>;
    }
    function encode(obj: Partial<Message>): Uint8Array<ArrayBuffer>;
    function decode(buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Message>): Message;
    function stream(buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Message>): Generator<MessageTypeFieldEvent | MessageKeyFieldEvent | MessageCloserIdFieldEvent | MessageCloserMultiaddrsFieldEvent | MessageProvidersIdFieldEvent | MessageProvidersMultiaddrsFieldEvent>;
}
