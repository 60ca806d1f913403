export interface Circle {
  radius: number;
}

export function area(circle: Circle): number {
  return Math.PI * circle.radius * circle.radius;
}

export function perimeter(circle: Circle): number {
  return 2 * Math.PI * circle.radius;
}
