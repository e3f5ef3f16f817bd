export const hello: string = 'oci';
